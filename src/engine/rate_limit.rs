//! Input rate limits of one connection: token buckets for messages and
//! payload bytes per second, each with a burst.
//!
//! A bucket starts full (`burst` tokens) and refills at `rate` tokens a
//! second, never past `burst`. A message takes one token from the message
//! bucket and its length from the byte bucket. The message bucket must hold
//! a whole token for a message to pass; the byte bucket only needs to be out
//! of debt, because the length of the next message is known only once it has
//! been read: a message larger than what is left passes and leaves the
//! bucket in debt, which the next message waits out. Over any long stretch
//! the peer gets `rate` (plus one burst), whatever its message sizes.
//!
//! Under [`RateLimitPolicy::Pause`] the connection simply stops reading the
//! socket until the buckets allow the next message: the peer's writes back
//! up into TCP, and nothing is buffered here. Under
//! [`RateLimitPolicy::Close`] it reads on and closes with 1008 at the first
//! message over the limit.
//!
//! Only data messages count; control frames (pings, pongs, close) are not
//! limited here.

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use std::future::Future;
use tokio::time::{Instant, Sleep};

use crate::settings::{InputLimits, Rate, RateLimitPolicy};

struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
    /// Tokens a message needs before it may be read: 1 for messages, 0 (out
    /// of debt) for bytes.
    need: f64,
}

impl Bucket {
    fn new(rate: Rate, need: f64, now: Instant) -> Self {
        Bucket {
            rate: rate.per_second.max(f64::MIN_POSITIVE),
            burst: rate.burst.max(need),
            tokens: rate.burst.max(need),
            updated: now,
            need,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
    }

    /// How long until a message may pass; zero if it may now.
    fn wait(&self) -> Duration {
        let missing = self.need - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            // Round up to a whole microsecond so that the wake-up finds the
            // token there, not a hair short of it.
            Duration::from_secs_f64(missing / self.rate) + Duration::from_micros(1)
        }
    }
}

/// Why a message was refused under [`RateLimitPolicy::Close`].
pub(super) struct Exceeded(pub &'static str);

/// The buckets of one connection.
pub(super) struct RateLimiter {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    policy: RateLimitPolicy,
    /// Wakes a paused connection once the buckets allow the next message;
    /// made on the first pause and reset after.
    timer: Option<Pin<Box<Sleep>>>,
}

impl RateLimiter {
    /// The limiter for `limits`, or `None` when no limit is set (the
    /// connection then pays nothing for this feature).
    pub fn new(limits: &InputLimits) -> Option<Box<Self>> {
        if limits.is_off() {
            return None;
        }
        let now = Instant::now();
        Some(Box::new(RateLimiter {
            messages: limits.messages.map(|rate| Bucket::new(rate, 1.0, now)),
            bytes: limits.bytes.map(|rate| Bucket::new(rate, 0.0, now)),
            policy: limits.policy,
            timer: None,
        }))
    }

    fn refill(&mut self, now: Instant) -> Duration {
        let mut wait = Duration::ZERO;
        for bucket in [&mut self.messages, &mut self.bytes].into_iter().flatten() {
            bucket.refill(now);
            wait = wait.max(bucket.wait());
        }
        wait
    }

    /// Under [`RateLimitPolicy::Pause`]: whether the next message may be
    /// read now; if not, the timer is set to wake the task when it may.
    /// Returns `(ready, paused_now)`, `paused_now` telling a new pause from
    /// one already under way (for the metric).
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> (bool, bool) {
        if self.policy != RateLimitPolicy::Pause {
            return (true, false);
        }
        loop {
            let now = Instant::now();
            let wait = self.refill(now);
            if wait.is_zero() {
                return (true, false);
            }
            let deadline = now + wait;
            let fresh = match &mut self.timer {
                Some(timer) if timer.deadline() == deadline => false,
                Some(timer) => {
                    let fresh = timer.is_elapsed();
                    timer.as_mut().reset(deadline);
                    fresh
                }
                None => {
                    self.timer = Some(Box::pin(tokio::time::sleep_until(deadline)));
                    true
                }
            };
            let timer = self.timer.as_mut().expect("set above");
            if timer.as_mut().poll(cx).is_pending() {
                return (false, fresh);
            }
        }
    }

    /// A data message of `len` payload bytes was read: takes its tokens.
    /// Under [`RateLimitPolicy::Close`], refuses it if a bucket was short.
    pub fn take(&mut self, len: usize) -> Result<(), Exceeded> {
        if self.policy == RateLimitPolicy::Close {
            self.refill(Instant::now());
            if self.messages.as_ref().is_some_and(|b| b.tokens < b.need) {
                return Err(Exceeded("message rate limit exceeded"));
            }
            if self.bytes.as_ref().is_some_and(|b| b.tokens < b.need) {
                return Err(Exceeded("byte rate limit exceeded"));
            }
        }
        if let Some(bucket) = &mut self.messages {
            bucket.tokens -= 1.0;
        }
        if let Some(bucket) = &mut self.bytes {
            bucket.tokens -= len as f64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(messages: Option<(f64, f64)>, bytes: Option<(f64, f64)>) -> InputLimits {
        let rate = |(per_second, burst)| Rate { per_second, burst };
        InputLimits {
            messages: messages.map(rate),
            bytes: bytes.map(rate),
            policy: RateLimitPolicy::Close,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn close_policy_allows_the_burst_then_the_rate() {
        let mut limiter = RateLimiter::new(&limits(Some((10.0, 3.0)), None)).unwrap();
        for _ in 0..3 {
            assert!(limiter.take(1).is_ok());
        }
        assert!(limiter.take(1).is_err());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limiter.take(1).is_ok());
        assert!(limiter.take(1).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_may_overdraw_once_then_wait_out_the_debt() {
        let mut limiter = RateLimiter::new(&limits(None, Some((1000.0, 100.0)))).unwrap();
        assert!(limiter.take(600).is_ok()); // 100 - 600 = -500
        assert!(limiter.take(1).is_err());
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(limiter.take(1).is_err());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(limiter.take(1).is_ok());
    }

    #[test]
    fn no_limit_no_limiter() {
        assert!(RateLimiter::new(&InputLimits::default()).is_none());
    }
}
