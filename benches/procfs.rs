//! /proc and rlimit helpers shared by the benchmark binaries (included with
//! `#[path = "procfs.rs"] mod procfs;`).

/// Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: plain libc calls on a properly initialised struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

/// User and system CPU time (all threads) of another process, in
/// microseconds, from /proc/PID/stat. Resolution is one clock tick (usually
/// 10 ms).
pub fn proc_user_sys_us(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ')' index 0 is field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as u64 } else { 100 };
    Some((utime * 1_000_000 / tck, stime * 1_000_000 / tck))
}

/// CPU time (utime + stime, all threads) of another process, in microseconds.
pub fn proc_cpu_us(pid: u32) -> Option<u64> {
    proc_user_sys_us(pid).map(|(user, sys)| user + sys)
}

/// What a process did so far, by the kernel's count: user and system CPU
/// (clock ticks, in µs) and its I/O system calls (/proc/PID/io: read-type
/// and write-type calls, bytes through them).
#[derive(Clone, Copy, Default)]
pub struct ProcCounters {
    pub user_us: u64,
    pub sys_us: u64,
    pub syscr: u64,
    pub syscw: u64,
    pub rchar: u64,
    pub wchar: u64,
}

impl ProcCounters {
    pub fn read(pid: u32) -> Option<Self> {
        let (user_us, sys_us) = proc_user_sys_us(pid)?;
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        let field = |name: &str| -> Option<u64> {
            io.lines()
                .find_map(|l| l.strip_prefix(name))?
                .trim_start_matches(':')
                .trim()
                .parse()
                .ok()
        };
        Some(ProcCounters {
            user_us,
            sys_us,
            syscr: field("syscr")?,
            syscw: field("syscw")?,
            rchar: field("rchar")?,
            wchar: field("wchar")?,
        })
    }

    pub fn since(self, before: Self) -> Self {
        ProcCounters {
            user_us: self.user_us.saturating_sub(before.user_us),
            sys_us: self.sys_us.saturating_sub(before.sys_us),
            syscr: self.syscr.saturating_sub(before.syscr),
            syscw: self.syscw.saturating_sub(before.syscw),
            rchar: self.rchar.saturating_sub(before.rchar),
            wchar: self.wchar.saturating_sub(before.wchar),
        }
    }
}

/// User plus system CPU seconds of process `pid` so far (0 if unreadable).
pub fn process_cpu(pid: u32) -> f64 {
    proc_cpu_us(pid).map_or(0.0, |us| us as f64 / 1e6)
}
