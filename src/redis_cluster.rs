//! The subscriber of a [`RedisBroker`](crate::RedisBroker) on a Redis
//! Cluster: sharded pub/sub through redis-rs's cluster connection (RESP3),
//! which sends each `SSUBSCRIBE` to the shard owning the channel and
//! subscribes again by itself after reconnecting to a shard. As on a single
//! server, the subscriptions follow the wanted set: one `SSUBSCRIBE` or
//! `SUNSUBSCRIBE` per channel (a sharded command may not span slots).

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::join_all;
use tokio::sync::mpsc;

use super::{connect_subscriber, lock, Attempt, Backoff, Inner, IO_TIMEOUT, SUBSCRIBER};
use crate::broker::Delivery;

pub(super) async fn subscribe_loop(
    inner: Arc<Inner>,
    nodes: Vec<redis::ConnectionInfo>,
    delivery: Delivery,
) {
    let mut backoff = Backoff::default();
    loop {
        let (pushes, mut received) = mpsc::unbounded_channel();
        let connect = async {
            let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes)
                .build()?;
            client.get_async_connection().await
        };
        let mut conn = match connect_subscriber(&inner, &delivery, &mut backoff, connect).await {
            Attempt::Connected(conn) => conn,
            Attempt::Retry => continue,
            Attempt::Stop => return,
        };
        let mut subscribed: HashSet<String> = HashSet::new();
        let mut first = true;
        let failure: String = loop {
            if let Err(error) = reconcile(&inner, &mut conn, &mut subscribed).await {
                break error;
            }
            if first {
                first = false;
                inner.fill_gaps(&subscribed, &delivery).await;
                inner.health.up(SUBSCRIBER);
                inner.subscribed.send_replace(true);
                backoff.reset();
            }
            tokio::select! {
                biased;
                () = delivery.closed() => return,
                () = inner.wanted_changed.notified() => {}
                push = received.recv() => match push {
                    Some(push) => {
                        if push.kind == redis::PushKind::SMessage {
                            if let Some(message) = redis::Msg::from_push_info(push) {
                                inner.receive(&message, &delivery);
                            }
                        }
                    }
                    None => break "cluster connection closed".to_owned(),
                },
            }
        };
        lock(&inner.active).clear();
        inner.subscribed.send_replace(false);
        inner.health.down(SUBSCRIBER, &failure);
        if !backoff.wait(&delivery).await {
            return;
        }
    }
}

async fn reconcile(
    inner: &Inner,
    conn: &mut redis::cluster_async::ClusterConnection,
    subscribed: &mut HashSet<String>,
) -> Result<(), String> {
    let (add, remove): (Vec<String>, Vec<String>) = {
        let wanted = lock(&inner.wanted);
        (
            wanted.difference(subscribed).cloned().collect(),
            subscribed.difference(&wanted).cloned().collect(),
        )
    };
    if !add.is_empty() {
        let subscribing = add.iter().map(|group| {
            let mut conn = conn.clone();
            let channel = inner.backend.channel(group);
            async move { conn.ssubscribe(channel).await }
        });
        let results = tokio::time::timeout(IO_TIMEOUT, join_all(subscribing))
            .await
            .map_err(|_| "SSUBSCRIBE timed out".to_owned())?;
        for result in results {
            result.map_err(|e| e.to_string())?;
        }
        lock(&inner.active).extend(add.iter().cloned());
        subscribed.extend(add);
        inner.active_changed.notify_waiters();
    }
    if !remove.is_empty() {
        {
            let mut active = lock(&inner.active);
            for group in &remove {
                active.remove(group);
                subscribed.remove(group);
            }
        }
        let unsubscribing = remove.iter().map(|group| {
            let mut conn = conn.clone();
            let channel = inner.backend.channel(group);
            async move { conn.sunsubscribe(channel).await }
        });
        let results = tokio::time::timeout(IO_TIMEOUT, join_all(unsubscribing))
            .await
            .map_err(|_| "SUNSUBSCRIBE timed out".to_owned())?;
        for result in results {
            result.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
