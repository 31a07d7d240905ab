//! Presence kept in Redis by [`RedisBroker`](crate::RedisBroker): each
//! process's share, its heartbeat, and the removal of a dead process's share.
//!
//! Keys (the `{…}` hash tags keep each group's keys, and the node keys, on
//! one Redis Cluster slot):
//!
//! - `squall:presence:{G}`: a hash per group; field `<process id>|<user>`,
//!   value `{"meta":…,"connections":n}`, this process's share of the user.
//! - `squall:{nodes}`: a sorted set of live process ids, scored by their last
//!   heartbeat (Redis's clock, in ms).
//! - `squall:{nodes}:groups:<id>`: the groups a process has presence in.
//! - `squall:{nodes}:reaped:<id>`: set for an hour when a process was
//!   declared dead, so that if it was only slow it announces its members
//!   again when it comes back.
//!
//! Every process heartbeats every [`HEARTBEAT`] with one script that also
//! finds the processes silent for longer than [`NODE_TIMEOUT`] and removes
//! them from the live set (atomically, so one process reaps each). The
//! reaper then deletes their fields and publishes the leaves. So a process
//! that dies without a goodbye has its members removed within
//! `NODE_TIMEOUT + HEARTBEAT` (15 s) of its last heartbeat, as long as one
//! process is alive to reap it. Listings skip the fields of processes not
//! in the live set, so they never show a reaped process's members even if
//! its reaper died half way.
//!
//! A process rewrites its whole share when its heartbeat finds it missing
//! from the live set: on its first beat, after Redis restarted (empty), or
//! after it was reaped while only slow.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::presence::{Member, PresenceDiff, PresenceError};

/// How often each process heartbeats (and reaps).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a process may go without a heartbeat before it is dead.
pub(crate) const NODE_TIMEOUT: Duration = Duration::from_secs(10);

const NODES: &str = "squall:{nodes}";

pub(crate) fn group_key(group: &str) -> String {
    format!("squall:presence:{{{group}}}")
}

fn groups_key(node: &str) -> String {
    format!("squall:{{nodes}}:groups:{node}")
}

fn field(node: &str, user: &str) -> String {
    format!("{node}|{user}")
}

/// Heartbeat: record this node's beat, tell whether it was missing (first
/// beat, Redis restarted, or reaped) and whether it had been reaped, and
/// claim the dead nodes. Returns `{added, reaped, dead…}`.
const HEARTBEAT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now, ARGV[1])
local reaped = redis.call('DEL', KEYS[1] .. ':reaped:' .. ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local out = {added, reaped}
for _, node in ipairs(dead) do
  redis.call('ZREM', KEYS[1], node)
  redis.call('SET', KEYS[1] .. ':reaped:' .. node, '1', 'EX', 3600)
  table.insert(out, node)
end
return out
";

#[derive(serde::Serialize, serde::Deserialize)]
struct Share {
    meta: serde_json::Value,
    connections: usize,
}

/// The commands that store one change of this node's share.
pub(crate) fn share_commands(node: &str, group: &str, member: &Member) -> Vec<redis::Cmd> {
    let key = group_key(group);
    let field = field(node, &member.user);
    if member.connections == 0 {
        return vec![redis::cmd("HDEL").arg(key).arg(field).to_owned()];
    }
    let share = Share {
        meta: member.meta.clone(),
        connections: member.connections,
    };
    let value = serde_json::to_string(&share).unwrap_or_default();
    vec![
        redis::cmd("HSET").arg(key).arg(field).arg(value).to_owned(),
        redis::cmd("SADD")
            .arg(groups_key(node))
            .arg(group)
            .to_owned(),
    ]
}

/// What one heartbeat found.
pub(crate) struct Beat {
    /// This node was missing from the live set: its share must be rewritten.
    pub missing: bool,
    /// It had been declared dead: the others saw its leaves.
    pub reaped: bool,
    /// Nodes this beat claimed as dead: their shares are ours to remove.
    pub dead: Vec<String>,
}

pub(crate) async fn heartbeat(
    conn: &mut crate::redis_backend::Conn,
    node: &str,
) -> redis::RedisResult<Beat> {
    let timeout_ms = NODE_TIMEOUT.as_millis() as u64;
    let reply: Vec<redis::Value> = redis::cmd("EVAL")
        .arg(HEARTBEAT_SCRIPT)
        .arg(1)
        .arg(NODES)
        .arg(node)
        .arg(timeout_ms)
        .query_async(conn)
        .await?;
    let int = |v: Option<&redis::Value>| matches!(v, Some(redis::Value::Int(n)) if *n > 0);
    let dead = reply
        .iter()
        .skip(2)
        .filter_map(|v| redis::from_redis_value_ref::<String>(v).ok())
        .collect();
    Ok(Beat {
        missing: int(reply.first()),
        reaped: int(reply.get(1)),
        dead,
    })
}

/// Removes a dead node's share; returns the leave diffs to send.
pub(crate) async fn reap(
    conn: &mut crate::redis_backend::Conn,
    node: &str,
) -> redis::RedisResult<Vec<PresenceDiff>> {
    let groups: Vec<String> = redis::cmd("SMEMBERS")
        .arg(groups_key(node))
        .query_async(conn)
        .await?;
    let prefix = format!("{node}|");
    let mut diffs = Vec::new();
    for group in groups {
        let key = group_key(&group);
        let fields: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(conn).await?;
        let mut leaves = Vec::new();
        let mut gone = Vec::new();
        for (field, value) in fields {
            let Some(user) = field.strip_prefix(&prefix) else {
                continue;
            };
            if let Ok(share) = serde_json::from_str::<Share>(&value) {
                leaves.push(Member {
                    user: user.to_owned(),
                    meta: share.meta,
                    connections: share.connections,
                });
            }
            gone.push(field);
        }
        if gone.is_empty() {
            continue;
        }
        redis::cmd("HDEL")
            .arg(&key)
            .arg(&gone)
            .query_async::<()>(conn)
            .await?;
        leaves.sort_by(|a, b| a.user.cmp(&b.user));
        diffs.push(PresenceDiff {
            group,
            joins: Vec::new(),
            leaves,
        });
    }
    redis::cmd("DEL")
        .arg(groups_key(node))
        .query_async::<()>(conn)
        .await?;
    Ok(diffs)
}

/// The members of `group` in live nodes other than `me`.
pub(crate) async fn remote_members(
    conn: &mut crate::redis_backend::Conn,
    me: &str,
    group: &str,
) -> Result<Vec<Member>, PresenceError> {
    // Two commands, not a pipeline: on a cluster the keys are on different
    // shards.
    let unavailable = |e: redis::RedisError| PresenceError::Unavailable(e.to_string());
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(group_key(group))
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    let live: Vec<String> = redis::cmd("ZRANGE")
        .arg(NODES)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    let live: HashSet<String> = live.into_iter().collect();
    let mut members = Vec::new();
    for (field, value) in fields {
        let Some((node, user)) = field.split_once('|') else {
            continue;
        };
        if node == me || !live.contains(node) {
            continue;
        }
        if let Ok(share) = serde_json::from_str::<Share>(&value) {
            members.push(Member {
                user: user.to_owned(),
                meta: share.meta,
                connections: share.connections,
            });
        }
    }
    Ok(members)
}
