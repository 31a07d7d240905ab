//! The Redis a [`RedisBroker`](crate::RedisBroker) talks to: one server, or
//! a Redis Cluster (feature `redis-cluster`).
//!
//! On a cluster, each group's keys and channel carry the group as a hash
//! tag (`squall:group:{G}`, `squall:history:{G}`, `squall:presence:{G}`), so
//! they live on one shard, and broadcasts use sharded pub/sub (`SPUBLISH`,
//! `SSUBSCRIBE`, Redis 7): a message reaches only the shard that owns its
//! group and the processes subscribed there, instead of every node of the
//! cluster. Commands of one publish batch go to their shards one by one
//! (concurrently) instead of in one pipeline, since a pipeline may not span
//! slots.

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Channel name prefix; the group name (a hash tag on a cluster) follows.
pub(crate) const CHANNEL_PREFIX: &str = "squall:group:";

pub(crate) enum Backend {
    Single(redis::Client),
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<redis::ConnectionInfo>),
}

/// A connection for commands.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(redis::aio::MultiplexedConnection),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Backend {
    pub async fn connect(&self) -> RedisResult<Conn> {
        match self {
            Backend::Single(client) => Ok(Conn::Single(
                client.get_multiplexed_async_connection().await?,
            )),
            #[cfg(feature = "redis-cluster")]
            Backend::Cluster(nodes) => {
                let client = redis::cluster::ClusterClient::new(nodes.clone())?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        !matches!(self, Backend::Single(_))
    }

    /// The channel of `group`.
    pub fn channel(&self, group: &str) -> String {
        if self.is_cluster() {
            format!("{CHANNEL_PREFIX}{{{group}}}")
        } else {
            format!("{CHANNEL_PREFIX}{group}")
        }
    }

    /// The group of a channel.
    pub fn group<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let rest = channel.strip_prefix(CHANNEL_PREFIX)?;
        if self.is_cluster() {
            rest.strip_prefix('{')?.strip_suffix('}')
        } else {
            Some(rest)
        }
    }

    /// `PUBLISH`, or `SPUBLISH` on a cluster.
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
}

impl Conn {
    /// Sends `commands` in order, ignoring their answers: one pipeline on a
    /// single server, one command at a time (concurrently) on a cluster.
    pub async fn send_all(&mut self, commands: Vec<Cmd>) -> RedisResult<()> {
        match self {
            Conn::Single(conn) => {
                let mut pipeline = redis::pipe();
                for cmd in commands {
                    pipeline.add_command(cmd).ignore();
                }
                pipeline.query_async::<()>(conn).await
            }
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => {
                let sends = commands.into_iter().map(|cmd| {
                    let mut conn = conn.clone();
                    async move { cmd.query_async::<Value>(&mut conn).await }
                });
                for result in futures_util::future::join_all(sends).await {
                    result?;
                }
                Ok(())
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}
