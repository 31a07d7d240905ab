//! squall: a Tornado-style WebSocket handler framework on tokio.
