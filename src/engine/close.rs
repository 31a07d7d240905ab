//! The close state machine of one connection.
//!
//! Each closing state carries the deadline that bounds it, so no state can
//! wait for ever; the transitions are methods here, and the connection loop
//! (`engine/mod.rs`) only asks the phase what it may do (read, feed queued
//! messages, flush) and reports what happened (a close asked for, a protocol
//! error, the peer's close frame, a flush, the end of the socket).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;
use tokio::time::{Instant, Sleep};
use tungstenite::error::Error as WsError;

use crate::message::{close_code, Utf8Bytes};

/// Where the connection is in its life.
pub(crate) enum Phase {
    Open,
    /// A close was asked for: the messages already queued are written first,
    /// then the close frame.
    Draining {
        code: u16,
        reason: Utf8Bytes,
        deadline: Deadline,
    },
    /// Our close frame is out (or the peer's arrived and ours echoes it);
    /// waiting for the end of the close handshake.
    Closing {
        deadline: Deadline,
    },
    /// The peer broke the protocol: our close frame is being flushed; the
    /// rest of what the peer sends is not parsed any more.
    Failing {
        deadline: Deadline,
    },
    /// Our close frame is out after a protocol error: the write side is shut
    /// down and whatever the peer still sends is read and discarded until it
    /// closes (a lingering close, under the same deadline). Dropping the
    /// socket with unread input would reset the connection, and a reset can
    /// destroy the close frame before the peer reads it (a peer still
    /// writing an oversized message would then see 1006, not 1009).
    Lingering {
        shut_down: bool,
        deadline: Deadline,
    },
    Closed,
}

/// A closing phase's deadline: the instant, and its timer once the
/// connection waits for it. A close handshake that completes while the task
/// keeps running (the usual one) never makes the timer: no allocation, no
/// registration with the runtime's timer wheel.
pub(crate) struct Deadline {
    at: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

fn deadline(timeout: Duration) -> Deadline {
    let now = Instant::now();
    Deadline {
        // As tokio's `sleep` does for a timeout too large to add: far away.
        at: now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30)),
        timer: None,
    }
}

impl Deadline {
    /// Ready once the deadline has passed. With `again` (the task runs again
    /// at once) only the clock is read; otherwise the timer is made if need
    /// be and registered for a wake-up.
    fn poll(&mut self, cx: &mut Context<'_>, again: bool) -> Poll<()> {
        if again {
            return if self.at <= Instant::now() {
                Poll::Ready(())
            } else {
                Poll::Pending
            };
        }
        let at = self.at;
        self.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)))
            .as_mut()
            .poll(cx)
    }
}

impl Phase {
    /// Open → Draining: a close asked for by the handler, another task, the
    /// overflow policy, a ping timeout or the server's shutdown. `false`
    /// (and no change) once the connection is already closing.
    pub fn begin_close(&mut self, code: u16, reason: Utf8Bytes, timeout: Duration) -> bool {
        if !matches!(self, Phase::Open) {
            return false;
        }
        *self = Phase::Draining {
            code,
            reason,
            deadline: deadline(timeout),
        };
        true
    }

    /// Draining → Closing: the queue is drained and our close frame was
    /// queued. Returns the frame's code and reason.
    pub fn close_frame_queued(&mut self, timeout: Duration) -> Option<(u16, Utf8Bytes)> {
        let Phase::Draining { code, reason, .. } = self else {
            return None;
        };
        let frame = (*code, reason.clone());
        *self = Phase::Closing {
            deadline: deadline(timeout),
        };
        Some(frame)
    }

    /// The peer's close frame arrived (tungstenite queues the echo). From
    /// Open or Draining this goes to Closing and returns `true`: nothing
    /// more may be queued.
    pub fn peer_closed(&mut self, timeout: Duration) -> bool {
        if !matches!(self, Phase::Open | Phase::Draining { .. }) {
            return false;
        }
        *self = Phase::Closing {
            deadline: deadline(timeout),
        };
        true
    }

    /// A protocol error from the peer: Failing if our close frame could be
    /// queued, Closed otherwise. Only from Open or Draining; `false` (the
    /// connection is simply over) in later phases.
    pub fn fail(&mut self, frame_queued: bool, timeout: Duration) -> bool {
        if !matches!(self, Phase::Open | Phase::Draining { .. }) {
            *self = Phase::Closed;
            return false;
        }
        *self = if frame_queued {
            Phase::Failing {
                deadline: deadline(timeout),
            }
        } else {
            Phase::Closed
        };
        true
    }

    /// Everything written so far reached the socket: Failing → Lingering,
    /// keeping the deadline.
    pub fn flushed(&mut self) {
        if matches!(self, Phase::Failing { .. }) {
            let Phase::Failing { deadline } = std::mem::replace(self, Phase::Closed) else {
                unreachable!("checked above")
            };
            *self = Phase::Lingering {
                shut_down: false,
                deadline,
            };
        }
    }

    /// Whether frames are read now; `wanted` is whether the handler side has
    /// room for an event (only the open phase holds back for it).
    pub fn reads(&self, wanted: bool) -> bool {
        match self {
            Phase::Open => wanted,
            Phase::Draining { .. } | Phase::Closing { .. } => true,
            Phase::Failing { .. } | Phase::Lingering { .. } | Phase::Closed => false,
        }
    }

    /// Whether tungstenite still answers the peer's pings (it stops once a
    /// close frame has gone either way): in these phases each ping read adds
    /// a pong to the outgoing side, so a full outgoing side stops reading.
    pub fn answers_pings(&self) -> bool {
        matches!(self, Phase::Open | Phase::Draining { .. })
    }

    /// Whether queued messages are still moved to the socket.
    pub fn feeds_queue(&self) -> bool {
        matches!(self, Phase::Open | Phase::Draining { .. })
    }

    /// Whether a flush is due: in the open phase only when something is
    /// unflushed; closing phases flush until their frame is out.
    pub fn flushes(&self, unflushed: bool) -> bool {
        match self {
            Phase::Open | Phase::Lingering { .. } => unflushed,
            _ => true,
        }
    }

    /// Whether events still reach the handler.
    pub fn delivers(&self) -> bool {
        matches!(self, Phase::Open)
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Phase::Open)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self, Phase::Closed)
    }

    /// Ready when the deadline of a closing phase has passed. With `again`
    /// (the task has woken itself and runs again at once) the deadline is
    /// only compared with the clock: its timer is made and registered
    /// (which costs an allocation and a wake-up of the runtime's driver)
    /// only when the connection actually waits, so a close handshake that
    /// completes at once never arms it.
    pub fn poll_deadline(&mut self, cx: &mut Context<'_>, again: bool) -> Poll<()> {
        match self {
            Phase::Draining { deadline, .. }
            | Phase::Closing { deadline }
            | Phase::Failing { deadline }
            | Phase::Lingering { deadline, .. } => deadline.poll(cx, again),
            Phase::Open | Phase::Closed => Poll::Pending,
        }
    }
}

/// The close code for a read error that is the peer's fault; `None` for the
/// end of the connection.
pub(crate) fn close_for(error: &WsError) -> Option<(u16, &'static str)> {
    match error {
        WsError::Protocol(_) | WsError::AttackAttempt => {
            Some((close_code::PROTOCOL_ERROR, "protocol error"))
        }
        WsError::Utf8(_) => Some((close_code::INVALID_PAYLOAD, "invalid UTF-8")),
        WsError::Capacity(_) => Some((close_code::TOO_BIG, "message too big")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn reason() -> Utf8Bytes {
        Utf8Bytes::from_static("bye")
    }

    #[tokio::test]
    async fn a_requested_close_drains_then_sends_its_frame() {
        let mut phase = Phase::Open;
        assert!(phase.begin_close(1000, reason(), T));
        assert!(matches!(phase, Phase::Draining { code: 1000, .. }));
        assert!(phase.feeds_queue() && phase.reads(false) && phase.flushes(false));
        assert!(phase.answers_pings(), "draining still answers pings");
        assert!(!phase.delivers());
        // A second close request changes nothing: the first wins.
        assert!(!phase.begin_close(1001, reason(), T));
        assert_eq!(phase.close_frame_queued(T).map(|f| f.0), Some(1000));
        assert!(matches!(phase, Phase::Closing { .. }));
        assert!(!phase.feeds_queue());
        assert_eq!(phase.close_frame_queued(T), None);
    }

    #[tokio::test]
    async fn pings_are_answered_until_a_close_frame_goes_either_way() {
        assert!(Phase::Open.answers_pings());
        let closing = Phase::Closing {
            deadline: deadline(T),
        };
        assert!(!closing.answers_pings());
        assert!(!Phase::Closed.answers_pings());
    }

    #[tokio::test]
    async fn the_peers_close_ends_the_open_and_draining_phases() {
        let mut phase = Phase::Open;
        assert!(phase.peer_closed(T));
        assert!(matches!(phase, Phase::Closing { .. }));
        assert!(!phase.peer_closed(T));

        let mut phase = Phase::Open;
        phase.begin_close(1000, reason(), T);
        assert!(phase.peer_closed(T));
        assert!(matches!(phase, Phase::Closing { .. }));
    }

    #[tokio::test]
    async fn a_protocol_error_fails_then_lingers_after_the_flush() {
        let mut phase = Phase::Open;
        assert!(phase.fail(true, T));
        assert!(matches!(phase, Phase::Failing { .. }));
        assert!(!phase.reads(true) && !phase.feeds_queue() && phase.flushes(false));
        phase.flushed();
        assert!(matches!(
            phase,
            Phase::Lingering {
                shut_down: false,
                ..
            }
        ));
        assert!(!phase.flushes(false));

        let mut phase = Phase::Open;
        assert!(phase.fail(false, T));
        assert!(phase.is_closed());

        let mut phase = Phase::Closing {
            deadline: deadline(T),
        };
        assert!(!phase.fail(true, T));
        assert!(phase.is_closed());
    }

    #[tokio::test]
    async fn a_flush_only_moves_failing() {
        let mut phase = Phase::Open;
        phase.flushed();
        assert!(phase.is_open());
        let mut phase = Phase::Closing {
            deadline: deadline(T),
        };
        phase.flushed();
        assert!(matches!(phase, Phase::Closing { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn every_closing_phase_is_bounded_by_its_deadline() {
        let mut phases = vec![
            Phase::Draining {
                code: 1000,
                reason: reason(),
                deadline: deadline(T),
            },
            Phase::Closing {
                deadline: deadline(T),
            },
            Phase::Failing {
                deadline: deadline(T),
            },
            Phase::Lingering {
                shut_down: true,
                deadline: deadline(T),
            },
        ];
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for phase in &mut phases {
            assert!(phase.poll_deadline(&mut cx, true).is_pending());
            assert!(phase.poll_deadline(&mut cx, false).is_pending());
        }
        tokio::time::advance(T + Duration::from_millis(1)).await;
        for phase in &mut phases {
            assert!(phase.poll_deadline(&mut cx, true).is_ready());
            assert!(phase.poll_deadline(&mut cx, false).is_ready());
        }
        assert!(Phase::Open.poll_deadline(&mut cx, false).is_pending());
    }

    #[test]
    fn read_errors_map_to_close_codes() {
        use tungstenite::error::{CapacityError, ProtocolError};
        let protocol = WsError::Protocol(ProtocolError::NonZeroReservedBits);
        assert_eq!(close_for(&protocol).map(|c| c.0), Some(1002));
        let big = WsError::Capacity(CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        });
        assert_eq!(close_for(&big).map(|c| c.0), Some(1009));
        assert_eq!(close_for(&WsError::ConnectionClosed), None);
    }
}
