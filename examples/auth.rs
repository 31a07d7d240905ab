//! A socket that requires a token: `prepare` looks it up (from the `token`
//! query argument or the `token` cookie) before the upgrade, refuses anyone
//! without a valid one with 401 and `WWW-Authenticate: Bearer`, and the
//! connection greets the user by name once open, then echoes.
//!
//! ```text
//! cargo run --example auth              # ws://127.0.0.1:8888/socket/?token=s3cret
//! cargo run --example auth -- 127.0.0.1:9000
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use squall::http::{header, Request, Response, StatusCode};
use squall::prelude::*; // Application, WebSocketHandler, RequestExt (query_argument, cookie)…

/// Who a token belongs to. A real server would ask a database or a token
/// service; the lookup is async either way.
#[derive(Clone)]
struct Tokens(Arc<HashMap<&'static str, &'static str>>);

impl Tokens {
    async fn lookup(&self, token: &str) -> Option<User> {
        // Stands in for the round trip to a token service.
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.0.get(token).map(|name| User {
            name: (*name).to_owned(),
        })
    }
}

/// The authenticated user, kept by the connection.
#[derive(Clone, Debug)]
struct User {
    name: String,
}

struct AuthSocket {
    tokens: Tokens,
}

fn unauthorized() -> Response<Bytes> {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::WWW_AUTHENTICATE, "Bearer")
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Bytes::from_static(b"a valid token is required\n"))
        .expect("a valid response")
}

impl WebSocketHandler for AuthSocket {
    async fn prepare(&mut self, request: &mut Request<()>) -> Result<(), Response<Bytes>> {
        let token = request
            .query_argument("token")
            .map(|token| token.into_owned())
            .or_else(|| request.cookie("token").map(str::to_owned));
        let Some(token) = token else {
            return Err(unauthorized());
        };
        match self.tokens.lookup(&token).await {
            Some(user) => {
                request.extensions_mut().insert(CurrentUser(user));
                Ok(())
            }
            None => Err(unauthorized()),
        }
    }

    async fn open(&mut self, ws: &WebSocket) {
        let name = ws.current_user::<User>().map_or("?", |user| &user.name);
        tracing::info!(user = name, "WebSocket opened");
        ws.write_message(format!("hello, {name}")).await.ok();
    }

    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.write_message(message).await.ok();
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    let tokens = Tokens(Arc::new(HashMap::from([
        ("s3cret", "ada"),
        ("hunter2", "grace"),
    ])));
    Application::new()
        .websocket("/socket/", move || AuthSocket {
            tokens: tokens.clone(),
        })
        .prepare_timeout(Duration::from_secs(2))
        .listen(addr)
        .await
}
