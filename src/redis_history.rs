//! Group history kept in Redis by [`RedisBroker`](crate::RedisBroker).
//!
//! Keys, per group `G` (one Redis Cluster slot through the hash tag):
//!
//! - `squall:history:{G}`: a stream; entry id `<seq>-0`, fields `m` (kind
//!   byte and message bytes) and `t` (Redis's clock, ms). Trimmed with
//!   `XADD … MAXLEN ~ N`.
//! - `squall:history:{G}:meta`: a hash with the group's `epoch` and last
//!   `seq`.
//!
//! One script records a message and publishes it with its offset, so the
//! order of the stream is the order in which every process receives the
//! messages. With an age limit both keys expire that long after the last
//! message; a later message starts a new epoch. A Redis that restarts empty
//! does the same.

use crate::history::{History, HistoryRead, HistoryUnavailable, Offset};
use crate::Message;

pub(crate) fn stream_key(group: &str) -> String {
    format!("squall:history:{{{group}}}")
}

fn meta_key(group: &str) -> String {
    format!("squall:history:{{{group}}}:meta")
}

/// KEYS: stream, meta. ARGV: a fresh epoch, max length, max age in ms (0:
/// none), channel, payload head (to which `epoch:seq ` and the body are
/// appended), body, `PUBLISH` or `SPUBLISH`.
const PUBLISH_SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'm', ARGV[6], 't', string.format('%d', ms))
local age = tonumber(ARGV[3])
if age > 0 then
  redis.call('PEXPIRE', KEYS[1], age)
  redis.call('PEXPIRE', KEYS[2], age)
end
redis.call(ARGV[7], ARGV[4], ARGV[5] .. epoch .. ':' .. seq .. ' ' .. ARGV[6])
return seq
";

/// KEYS: stream, meta. ARGV: the reader's epoch ('' if none), its seq, max
/// age in ms (0: none), max length. Reads the newest `max length` entries
/// (`MAXLEN ~` may keep a few more) and returns `{epoch, first, latest, seq,
/// body, …}`, the entries being those after the reader's offset if its epoch
/// is current, else all of them, oldest first; `{''}` if the group has no
/// history.
const READ_SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then return {''} end
local latest = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
local age = tonumber(ARGV[3])
local oldest = 0
if age > 0 then
  local t = redis.call('TIME')
  oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - age
end
local after = 0
if ARGV[1] == epoch then after = tonumber(ARGV[2]) end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[4])
local out = {epoch, latest + 1, latest}
for i = #newest, 1, -1 do
  local entry = newest[i]
  local seq = tonumber(string.match(entry[1], '^(%d+)'))
  local body, at = nil, 0
  for j = 1, #entry[2], 2 do
    if entry[2][j] == 'm' then body = entry[2][j + 1] end
    if entry[2][j] == 't' then at = tonumber(entry[2][j + 1]) end
  end
  if body and at >= oldest then
    if out[2] > seq then out[2] = seq end
    if seq > after then
      table.insert(out, seq)
      table.insert(out, body)
    end
  end
end
return out
";

/// The script call that records and publishes one message.
pub(crate) fn publish_cmd(
    group: &str,
    history: &History,
    channel: String,
    publish: &str,
    head: Vec<u8>,
    body: Vec<u8>,
) -> redis::Cmd {
    let age_ms = history.age().map_or(0, |age| age.as_millis().max(1) as u64);
    redis::cmd("EVAL")
        .arg(PUBLISH_SCRIPT)
        .arg(2)
        .arg(stream_key(group))
        .arg(meta_key(group))
        .arg(crate::history::new_epoch())
        .arg(history.messages())
        .arg(age_ms)
        .arg(channel)
        .arg(head)
        .arg(body)
        .arg(publish)
        .to_owned()
}

/// Splits `epoch:seq body` (what follows the payload head).
pub(crate) fn split_published(rest: &[u8]) -> Option<(Offset, &[u8])> {
    let space = rest.iter().position(|b| *b == b' ')?;
    let offset = Offset::parse(std::str::from_utf8(&rest[..space]).ok()?)?;
    Some((offset, &rest[space + 1..]))
}

/// Reads `group`'s history after `since`.
pub(crate) async fn read(
    conn: &mut crate::redis_backend::Conn,
    group: &str,
    since: Option<&Offset>,
    history: &History,
    decode: fn(&[u8]) -> Option<Message>,
) -> Result<HistoryRead, HistoryUnavailable> {
    let age_ms = history.age().map_or(0, |age| age.as_millis().max(1) as u64);
    let reply: Vec<redis::Value> = redis::cmd("EVAL")
        .arg(READ_SCRIPT)
        .arg(2)
        .arg(stream_key(group))
        .arg(meta_key(group))
        .arg(since.map_or("", |s| s.epoch.as_str()))
        .arg(since.map_or(0, |s| s.seq))
        .arg(age_ms)
        .arg(history.messages())
        .query_async(conn)
        .await
        .map_err(|e| HistoryUnavailable(e.to_string()))?;
    let epoch: String = reply
        .first()
        .and_then(|v| redis::from_redis_value_ref(v).ok())
        .unwrap_or_default();
    if epoch.is_empty() {
        return Ok(HistoryRead {
            first: 1,
            ..HistoryRead::default()
        });
    }
    let int = |i: usize| -> u64 {
        reply
            .get(i)
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .unwrap_or(0)
    };
    let mut entries = Vec::new();
    for pair in reply.get(3..).unwrap_or_default().chunks(2) {
        let [seq, body] = pair else { break };
        let (Ok(seq), Ok(body)) = (
            redis::from_redis_value_ref::<u64>(seq),
            redis::from_redis_value_ref::<Vec<u8>>(body),
        ) else {
            continue;
        };
        if let Some(message) = decode(&body) {
            entries.push((seq, message));
        }
    }
    Ok(HistoryRead {
        epoch: Some(epoch),
        first: int(1),
        latest: int(2),
        entries,
    })
}
