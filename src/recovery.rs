//! Recovery: joining a group with history after sending the client what it
//! missed (the protocol is in [`History`](crate::History)'s docs).
//!
//! The order of the steps is what makes it exact: the member is first
//! registered as catching up (live messages for it wait aside), then its
//! process subscribes to the group and waits for the confirmation, then the
//! history is read and sent, then what waited is sent (skipping what the
//! history already held), and the member joins the group under the same
//! lock as deliveries, when nothing more waits. Each member of a group with
//! history also remembers the last offset it was sent, so a message that
//! reaches it twice (from the history, then late from Redis) goes out once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::broker::Broker;
use crate::error::WriteError;
use crate::group::Groups;
use crate::history::{envelope, HistoryHub, HistoryRead, Offset, Recovery};
use crate::interest::{Interest, InterestGuard};
use crate::sender::WebSocketSender;

/// How long a member catching up waits for its process's subscription.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// What a join with history needs from the application.
pub(crate) struct Parts<'a> {
    pub history: &'a HistoryHub,
    pub groups: &'a Groups,
    pub interest: &'a Arc<Interest>,
    pub broker: Option<&'a Arc<dyn Broker>>,
}

/// Joins `group` for `sender` after sending it what it missed since `since`;
/// the caller records the membership.
pub(crate) async fn join_with_history(
    parts: Parts<'_>,
    sender: &WebSocketSender,
    group: &str,
    since: Option<&str>,
) -> Result<Recovery, WriteError> {
    let Parts {
        history: hub,
        groups,
        interest,
        broker,
    } = parts;
    let id = sender.id();
    let nothing = Recovery {
        recovered: true,
        missed: 0,
        offset: None,
    };
    if groups.contains(group, id) {
        return Ok(nothing);
    }
    let Some(history) = hub.rule(group).cloned() else {
        if groups.join(group, sender) {
            interest.add(group);
        }
        return Ok(nothing);
    };
    let since = since.filter(|s| !s.is_empty());
    let parsed = since.and_then(Offset::parse);
    hub.start_catch_up(group, id);
    // Subscribed before reading: a message published after the read is
    // then sure to arrive live.
    let wanted = InterestGuard::new(interest, group);
    if let Some(broker) = broker {
        if tokio::time::timeout(SUBSCRIBE_WAIT, broker.subscribed(group))
            .await
            .is_err()
        {
            tracing::warn!(group, "not subscribed in time: recovering anyway");
        }
    }
    let read = match broker.and_then(|broker| broker.read_history(group, parsed.as_ref(), &history))
    {
        Some(reading) => reading.await.unwrap_or_else(|error| {
            tracing::warn!(group, %error, "history unavailable: the client is told it has a gap");
            HistoryRead::default()
        }),
        None => hub.read_local(group, parsed.as_ref(), &history),
    };
    let result = catch_up(hub, groups, sender, group, since, parsed, read).await;
    hub.end_catch_up(group, id);
    if result.is_ok() {
        interest.add(group); // for the membership
    }
    drop(wanted);
    result
}

async fn catch_up(
    hub: &HistoryHub,
    groups: &Groups,
    sender: &WebSocketSender,
    group: &str,
    since: Option<&str>,
    parsed: Option<Offset>,
    read: HistoryRead,
) -> Result<Recovery, WriteError> {
    let current = read.epoch.clone().map(|epoch| Offset {
        epoch,
        seq: read.latest,
    });
    let (recovered, entries) = match (since, &parsed, &read.epoch) {
        (None, _, _) => (true, Vec::new()),
        (Some(_), Some(p), Some(epoch))
            if *epoch == p.epoch && p.seq + 1 >= read.first && p.seq <= read.latest =>
        {
            (true, read.entries)
        }
        _ => (false, read.entries),
    };
    let status = json!({
        "type": "squall.recovery",
        "group": group,
        "offset": current.as_ref().map(Offset::to_string),
        "recovered": recovered,
        "missed": entries.len(),
    });
    sender.write_message(status).await?;
    let epoch = read.epoch.unwrap_or_default();
    let missed = entries.len();
    let mut last = parsed
        .filter(|p| recovered && p.epoch == epoch && since.is_some())
        .map_or(0, |p| p.seq);
    for (seq, message) in entries {
        let offset = Offset {
            epoch: epoch.clone(),
            seq,
        };
        sender
            .write_message(envelope(group, Some(&offset), &message))
            .await?;
        last = last.max(seq);
    }
    // Send what arrived live meanwhile (skipping what the history already
    // sent), until nothing waits: then join, under the delivery lock.
    loop {
        let waiting = hub.waiting_or_join(group, sender.id(), last, || {
            groups.join_at(group, sender, last);
        });
        if waiting.is_empty() {
            break;
        }
        for (seq, wire) in waiting {
            sender.write_shared(wire).await?;
            last = last.max(seq);
        }
    }
    Ok(Recovery {
        recovered,
        missed,
        offset: current,
    })
}
