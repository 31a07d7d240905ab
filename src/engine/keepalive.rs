//! Keep-alive pings (Tornado's `websocket_ping_interval`): a ping every
//! `interval`, and the connection is closed if no pong arrives within
//! `timeout`.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::settings::Settings;

/// What the keep-alive timer asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Nothing yet.
    Nothing,
    /// Send a ping now.
    Ping,
    /// The last ping went unanswered for the whole timeout.
    TimedOut,
}

pub(super) struct KeepAlive {
    interval: Duration,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// When the unanswered ping was sent, if one is outstanding.
    awaiting_since: Option<Instant>,
}

impl KeepAlive {
    /// Keep-alive as the settings ask, or `None` without a ping interval.
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        let interval = settings.ping_interval?;
        Some(KeepAlive {
            interval,
            timeout: settings.effective_ping_timeout().unwrap_or(interval),
            timer: Box::pin(tokio::time::sleep(interval)),
            awaiting_since: None,
        })
    }

    /// Polls the timer; on `Ping` the caller sends one (the timer is then
    /// set to the pong deadline).
    pub fn poll_due(&mut self, cx: &mut Context<'_>) -> Due {
        if self.timer.as_mut().poll(cx).is_pending() {
            return Due::Nothing;
        }
        if self.awaiting_since.is_some() {
            return Due::TimedOut;
        }
        let now = Instant::now();
        self.awaiting_since = Some(now);
        self.timer.as_mut().reset(now + self.timeout);
        // Registers the new deadline with the waker.
        let _ = self.timer.as_mut().poll(cx);
        Due::Ping
    }

    /// A pong arrived: the next ping is due one interval after the last.
    pub fn pong(&mut self) {
        if let Some(sent) = self.awaiting_since.take() {
            self.timer.as_mut().reset(sent + self.interval);
        }
    }
}
