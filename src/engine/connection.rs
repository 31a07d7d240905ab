//! [`Connection`]: the engine side of one connection, the socket and
//! everything that moves it. [`Connection::poll_progress`] does all the work
//! the socket allows at a given moment; `driver.rs` calls it between and
//! during handler methods.

use std::pin::pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use tungstenite::protocol::Role;

use super::close::Phase;
use super::env::Env;
use super::inbox::{Event, Inbox};
use super::keepalive::{Due, KeepAlive};
use super::linger;
use super::outgoing;
use super::own_frames::{control_frame_len, OwnFrames, MAX_CONTROL_FRAME};
use super::protocol::{Frame, Protocol};
use super::rate_limit::RateLimiter;
use super::reader::FrameReader;
use super::shutdown::Shutdown;
use crate::deflate::inflate::InflateConfig;
use crate::deflate::write::Deflater;
use crate::deflate::Agreed;
use crate::message::{close_code, Message, Utf8Bytes};
use crate::send_queue::SendQueue;
use crate::stream::Stream;
use crate::telemetry::{ConnectionMetrics, RouteTelemetry, Side};
use crate::websocket::{PeerClose, WebSocket};

/// The close code reported for a close frame without a code (RFC 6455
/// §7.1.5), and for a connection that ended without a close handshake
/// (§7.1.5, 1006); neither is ever sent.
const NO_STATUS: u16 = 1005;
const ABNORMAL: u16 = 1006;

/// What the handshake settled that the connection needs.
pub(crate) struct Agreements {
    pub subprotocol: Option<String>,
    /// permessage-deflate, when agreed.
    pub deflate: Option<Agreed>,
}

/// Wraps an upgraded stream (and any bytes read past the request head) as a
/// WebSocket: the handler's context and the engine side, ready for
/// [`run`](super::run).
///
/// Synchronous on purpose: everything it takes is consumed here, so the
/// connection's future (one per open socket, the largest part of an idle
/// connection's memory) holds only what `run` needs, not these arguments
/// too.
pub(crate) fn establish(
    stream: Stream,
    read_ahead: BytesMut,
    request: http::Request<()>,
    agreements: Agreements,
    env: &Env,
    route: &RouteTelemetry,
) -> (WebSocket, Connection) {
    let settings = &env.settings;
    let Agreements {
        subprotocol,
        deflate,
    } = agreements;
    let deflate_reader = deflate.map(|agreed| {
        let config = InflateConfig {
            peer: agreed.theirs,
            max_message_size: settings.max_message_size,
        };
        let deflater = Deflater::new(agreed.ours, agreed.level, agreed.mem_level);
        (config, deflater)
    });
    // The bytes read past the request head go to the reader: a client may
    // send a message (compressed, even) right away.
    let reader = FrameReader::new(
        stream,
        Role::Server,
        read_ahead,
        settings.read_buffer_size,
        settings.max_message_size,
        deflate_reader,
    );
    // tungstenite reads only the control frames the reader puts in front of
    // it (`reader.rs`): its own read buffer starts empty and stays small.
    let config = settings.websocket_config().read_buffer_size(0);
    let ws = Protocol::new(reader, Role::Server, config);
    let mut queue = SendQueue::new(
        settings.max_queued_messages,
        settings.max_queued_bytes,
        settings.overflow,
    );
    queue.set_shared_deflate(deflate.and_then(|agreed| agreed.shared_key()));
    let queue = Arc::new(queue);
    let connection = Connection {
        ws,
        queue: queue.clone(),
        inbox: Inbox::new(settings.max_message_size),
        phase: Phase::Open,
        unflushed: false,
        own: OwnFrames::default(),
        keepalive: KeepAlive::from_settings(settings),
        shutdown: Shutdown::new(&env.shutdown),
        close_timeout: settings.close_timeout,
        peer_close: None,
        closing: None,
        limiter: RateLimiter::new(&settings.input_limits),
        metrics: route.metrics.connection(settings.handler_time_sampling),
    };
    let context = WebSocket::new(queue, request, subprotocol, env.hub.clone());
    (context, connection)
}

/// What one read gave the connection.
enum Read {
    /// An event for the handler.
    Event(Event),
    /// A frame handled with nothing to deliver (a close, or a message
    /// outside the open phase or over the rate limit).
    Nothing,
    /// The peer broke the protocol: close with this code and reason.
    Broken(u16, &'static str),
    /// The connection is over (the close handshake finished, or the peer
    /// vanished).
    Over,
}

/// What is left of a connection after its socket is closed.
pub(super) struct Ended {
    pub metrics: ConnectionMetrics,
    /// The close code it ended with (1006 without a close handshake).
    pub code: u16,
    /// Who began the close.
    pub side: Side,
}

/// The engine side of a connection: the socket and everything that moves it.
pub(crate) struct Connection {
    ws: Protocol<FrameReader>,
    queue: Arc<SendQueue>,
    pub(super) inbox: Inbox,
    phase: Phase,
    /// tungstenite holds bytes not yet flushed (data frames written from
    /// their own buffers are not counted: they wait in the stream).
    unflushed: bool,
    /// Pongs, pings and close frames written since the last flush; they
    /// hold room in the queue's bound until it completes.
    own: OwnFrames,
    keepalive: Option<KeepAlive>,
    shutdown: Shutdown,
    close_timeout: Duration,
    pub(super) peer_close: Option<PeerClose>,
    /// How the close began: its code and who sent the first close frame
    /// (the first to happen wins; for the closes metric).
    closing: Option<(u16, Side)>,
    /// The input rate limits, if any are set.
    limiter: Option<Box<RateLimiter>>,
    pub(super) metrics: ConnectionMetrics,
}

impl Connection {
    /// Ends the connection once the loop is over: the queue is emptied for
    /// good and, where the stream needs one (TLS: its close_notify), a
    /// shutdown is written. The shutdown is bounded: a peer that stopped
    /// reading would otherwise hold it up for ever (and `on_close` with it).
    /// A shutdown that completes at once does not arm the timer.
    pub(super) async fn finish(&mut self) {
        self.queue.close();
        self.queue.discard();
        self.own.flushed(&self.queue);
        if !self.ws.get_ref().get_ref().needs_shutdown() {
            return;
        }
        let mut shutdown = pin!(tokio::io::AsyncWriteExt::shutdown(self.ws.get_mut()));
        if shutdown.as_mut().now_or_never().is_none() {
            let _ = tokio::time::timeout(self.close_timeout, shutdown).await;
        }
    }

    /// Drops the socket (closing it) and everything else of the
    /// connection but its metrics, before `on_close` runs: the peer sees the
    /// end at once, however long `on_close` takes.
    pub(super) fn into_ended(self) -> Ended {
        let (code, side) = self.ended();
        Ended {
            metrics: self.metrics,
            code,
            side,
        }
    }

    /// The connection's send queue.
    pub(super) fn send_queue(&self) -> &Arc<SendQueue> {
        &self.queue
    }

    pub(super) fn begin_close(&mut self, code: u16, reason: Utf8Bytes) {
        if self.phase.begin_close(code, reason, self.close_timeout) {
            self.closing.get_or_insert((code, Side::Server));
            self.queue.close();
        }
    }

    /// The close code the connection ended with (1006 when there was no
    /// close handshake) and who began the close.
    fn ended(&self) -> (u16, Side) {
        self.closing.unwrap_or((ABNORMAL, Side::Neither))
    }

    /// Sends a close frame at once because the peer broke the protocol.
    fn fail(&mut self, code: u16, reason: &'static str, cx: &mut Context<'_>) {
        self.closing.get_or_insert((code, Side::Server));
        let queued = outgoing::fail(
            &mut self.ws,
            &self.queue,
            &mut self.phase,
            self.close_timeout,
            code,
            reason,
            cx,
        );
        if queued {
            self.own
                .written(&self.queue, control_frame_len(2 + reason.len()));
        }
        self.unflushed |= queued;
        cx.waker().wake_by_ref();
    }

    fn closed(&mut self) -> Poll<Option<Event>> {
        if !self.phase.is_closed() {
            self.queue.close();
            self.phase = Phase::Closed;
        }
        Poll::Ready(None)
    }

    /// Does all the work the socket allows now and returns the next event
    /// read (if `read` is allowed), `Ready(None)` once the connection is over,
    /// or `Pending` with every source of progress registered for wake-up.
    pub(super) fn poll_progress(
        &mut self,
        cx: &mut Context<'_>,
        read: bool,
    ) -> Poll<Option<Event>> {
        let progress = self.poll_round(cx, read);
        if !matches!(progress, Poll::Ready(Some(_))) {
            // Out of work for now (or done): this round's message counts go
            // to the shared counters in one go.
            self.metrics.flush();
        }
        progress
    }

    fn poll_round(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<Option<Event>> {
        if self.phase.is_closed() {
            return Poll::Ready(None);
        }
        self.queue.register(cx.waker());
        // Whether this round woke the task to run again at once.
        let mut again = false;
        if self.phase.is_open() {
            self.poll_close_triggers(cx);
        }

        // Queued writes go into the stream's frame queue or tungstenite's
        // buffer (no syscall yet, unless one passes `write_buffer_size`).
        if self.phase.feeds_queue() && self.poll_feed(cx).is_err() {
            return self.closed();
        }

        // Frames written from their own buffers go out before the next read,
        // not with the flush: their payloads were often read into the
        // reader's buffer, which is reused for the next frame only once no
        // payload points into it. They are large (`wire::DIRECT_MIN`), so
        // one write each costs little. Small frames wait, combined, for the
        // write after the last read.
        if self.ws.get_ref().get_ref().has_direct_frames() && self.poll_write_frames(cx).is_err() {
            return self.closed();
        }

        // A full outgoing side (queued messages, or pongs and other frames
        // of our own not yet flushed) stops reading while each ping read
        // would add a pong: the peer meets TCP backpressure rather than
        // growing our buffers.
        let outgoing_full = self.queue.is_full();
        if self.phase.reads(read)
            && !(outgoing_full && self.phase.answers_pings())
            && self.poll_rate_limit(cx)
        {
            match self.poll_read(cx) {
                Poll::Ready(Read::Event(event)) => return Poll::Ready(Some(event)),
                Poll::Ready(Read::Nothing) => {
                    // A close or an event outside the open phase: go round
                    // again to read on.
                    cx.waker().wake_by_ref();
                    again = true;
                }
                Poll::Ready(Read::Broken(code, reason)) if self.phase.feeds_queue() => {
                    self.fail(code, reason, cx);
                    again = true;
                }
                // The close handshake finished, or the peer vanished (or
                // broke the protocol after the close handshake began).
                Poll::Ready(Read::Broken(..) | Read::Over) => return self.closed(),
                Poll::Pending => {}
            }
        }

        // No more input is ready (or reading is paused): now write, data
        // frames first (one vectored write for all of them), then whatever
        // tungstenite holds.
        if self.poll_write_frames(cx).is_err() {
            return self.closed();
        }
        if self.phase.flushes(self.unflushed) {
            match self.ws.poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    self.own.flushed(&self.queue);
                    self.phase.flushed();
                    if outgoing_full && !self.queue.is_full() {
                        // Reading was held back for room that is free now.
                        cx.waker().wake_by_ref();
                        again = true;
                    }
                }
                Poll::Ready(Err(_)) => return self.closed(),
                Poll::Pending => {}
            }
        }

        if let Phase::Lingering { shut_down, .. } = &mut self.phase {
            if linger::poll_linger(self.ws.get_mut().get_mut(), cx, shut_down).is_ready() {
                return self.closed();
            }
        }

        if self.phase.poll_deadline(cx, again).is_ready() {
            tracing::debug!("close handshake timed out: dropping the connection");
            return self.closed();
        }
        Poll::Pending
    }

    /// Reads the next frame (`Protocol::poll_frame`): a data message from
    /// the reader, or a control frame through tungstenite.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        Poll::Ready(match ready!(self.ws.poll_frame(cx)) {
            Frame::Data(message) => {
                let delivered = self.data_in(message.len()).is_some() && self.phase.delivers();
                if delivered {
                    Read::Event(Event::Message(message))
                } else {
                    Read::Nothing
                }
            }
            Frame::Control(message) => {
                let ping = matches!(message, tungstenite::Message::Ping(_));
                let event = self.on_frame(message);
                if ping {
                    // tungstenite holds the pong aside and would write it
                    // after the next message given to it: a flush puts it in
                    // line now, ahead of replies to messages read after the
                    // ping. (The flush that completes the round does the
                    // bookkeeping.)
                    let _ = self.ws.poll_flush(cx);
                }
                event.map_or(Read::Nothing, Read::Event)
            }
            Frame::Broken(code, reason) => Read::Broken(code, reason),
            Frame::Over => Read::Over,
        })
    }

    /// Writes what it can of the data frames handed to the stream
    /// (`outgoing.rs`); `Err` if the socket failed.
    fn poll_write_frames(&mut self, cx: &mut Context<'_>) -> Result<(), ()> {
        let stream = self.ws.get_mut().get_mut();
        if stream.queued_frame_bytes() > 0 {
            if let Poll::Ready(Err(_)) = stream.poll_write_frames(cx) {
                return Err(());
            }
        }
        Ok(())
    }

    /// Whether the input rate limit lets the next message be read now (if
    /// not, a timer will wake the task when it does).
    fn poll_rate_limit(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(limiter) = &mut self.limiter else {
            return true;
        };
        let (ready, paused_now) = limiter.poll_read(cx);
        if paused_now {
            self.metrics.rate_limited("pause");
        }
        ready
    }

    /// Close requests, server shutdown and the keep-alive timer.
    fn poll_close_triggers(&mut self, cx: &mut Context<'_>) {
        if let Some(request) = self.queue.take_close_request() {
            self.begin_close(request.code, request.reason);
            return;
        }
        if self.shutdown.poll_cancelled(cx) {
            self.begin_close(
                close_code::GOING_AWAY,
                Utf8Bytes::from_static("server shutting down"),
            );
            return;
        }
        let Some(keepalive) = &mut self.keepalive else {
            return;
        };
        match keepalive.poll_due(cx) {
            Due::Nothing => {}
            Due::Ping => {
                if self
                    .ws
                    .start_send(cx, tungstenite::Message::Ping(Bytes::new()))
                    .is_ok()
                {
                    self.own.written(&self.queue, control_frame_len(0));
                    self.unflushed = true;
                }
            }
            Due::TimedOut => {
                tracing::debug!("no pong within the ping timeout: closing");
                self.metrics.ping_timed_out();
                self.begin_close(
                    close_code::GOING_AWAY,
                    Utf8Bytes::from_static("ping timeout"),
                );
            }
        }
    }

    /// Moves queued messages into tungstenite's write buffer. In the draining
    /// phase, sends the close frame once the queue is empty.
    fn poll_feed(&mut self, cx: &mut Context<'_>) -> Result<(), ()> {
        let draining = !self.phase.is_open();
        let metrics = &mut self.metrics;
        self.unflushed |= outgoing::poll_feed(
            &mut self.ws,
            &self.queue,
            &mut self.phase,
            self.close_timeout,
            !self.unflushed,
            cx,
            |len| metrics.sent(len),
        )?;
        if draining && !self.phase.feeds_queue() {
            // Our close frame went out after the queue; its reason is not
            // kept, so it counts as the largest control frame.
            self.own.written(&self.queue, MAX_CONTROL_FRAME);
        }
        Ok(())
    }

    /// Turns a message from tungstenite into an event for the handler, or
    /// records a close.
    fn on_frame(&mut self, message: tungstenite::Message) -> Option<Event> {
        let event = match message {
            tungstenite::Message::Text(text) => {
                self.data_in(text.len())?;
                Event::Message(Message::Text(text.into()))
            }
            tungstenite::Message::Binary(data) => {
                self.data_in(data.len())?;
                Event::Message(Message::Binary(data))
            }
            tungstenite::Message::Ping(data) => {
                // tungstenite has queued the pong; make sure it is flushed,
                // and count it against the outgoing bound until it is.
                self.own.written(&self.queue, control_frame_len(data.len()));
                self.unflushed = true;
                Event::Ping(data)
            }
            tungstenite::Message::Pong(data) => {
                if let Some(keepalive) = &mut self.keepalive {
                    keepalive.pong();
                }
                Event::Pong(data)
            }
            tungstenite::Message::Close(frame) => {
                // tungstenite queues the echo of the close frame.
                let echo = frame.as_ref().map_or(0, |f| 2 + f.reason.len());
                self.own.written(&self.queue, control_frame_len(echo));
                let code = self.ws.get_ref().peer_close_code(frame.as_ref());
                self.closing
                    .get_or_insert((code.unwrap_or(NO_STATUS), Side::Client));
                self.peer_close = Some(PeerClose {
                    code,
                    reason: frame
                        .as_ref()
                        .map(|f| f.reason.as_str().to_owned())
                        .filter(|r| !r.is_empty()),
                });
                // tungstenite has queued the echo of the close frame.
                self.unflushed = true;
                if self.phase.peer_closed(self.close_timeout) {
                    self.queue.close();
                }
                return None;
            }
            tungstenite::Message::Frame(_) => return None,
        };
        self.phase.delivers().then_some(event)
    }

    /// Counts a data message of `len` bytes in and applies the rate limit;
    /// `None` if the message must not be delivered (the limit closes the
    /// connection).
    fn data_in(&mut self, len: usize) -> Option<()> {
        self.metrics.received(len);
        if let Some(limiter) = &mut self.limiter {
            if let Err(exceeded) = limiter.take(len) {
                if self.phase.is_open() {
                    tracing::info!(reason = exceeded.0, "input rate limit: closing with 1008");
                    self.metrics.rate_limited("close");
                    self.begin_close(close_code::POLICY, Utf8Bytes::from_static(exceeded.0));
                }
                return None;
            }
        }
        Some(())
    }
}
