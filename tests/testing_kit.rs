//! `squall::testing` against a server in another process: the echo example,
//! bound to port 0, found by the address it logs; and the kit's bounds.

#![cfg(unix)]

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use squall::testing::{
    assert_closed_with, connect, default_timeout, next_text, set_default_timeout, TestServer, Wait,
};
use squall::{Application, Message, WebSocket, WebSocketHandler};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The address in a `listening on ADDR` log line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[tokio::test]
async fn the_kit_drives_a_server_in_another_process() {
    let mut child = tokio::process::Command::new(common::example("echo"))
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "squall=info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let wait = Wait::new(Duration::from_secs(30));
    let addr = wait
        .within("the example's address", async {
            loop {
                let line = lines.next_line().await.unwrap().expect("a log line");
                if let Some(addr) = listening_address(&line) {
                    return addr;
                }
            }
        })
        .await;
    // Keep reading the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let mut client = wait.connect_when_listening(addr, "/socket/").await;
    client.send("hi").await.unwrap();
    assert_eq!(wait.next_text(&mut client).await, "You said: hi");
    let mut second = connect(addr, "/socket/").await;
    second.send("two").await.unwrap();
    assert_eq!(next_text(&mut second).await, "You said: two");

    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) on the child we spawned and still own.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait.assert_closed_with(&mut client, 1001).await;
    assert_closed_with(&mut second, 1001).await;
    let status = wait.within("the example to exit", child.wait()).await;
    assert!(status.unwrap().success());
}

struct Silent;

impl WebSocketHandler for Silent {
    async fn on_message(&mut self, _ws: &WebSocket, _message: Message) {}
}

#[tokio::test]
#[should_panic(expected = "timed out after 50ms waiting for the next message")]
async fn a_wait_fails_after_its_own_timeout() {
    let (_server, mut client) =
        TestServer::start_and_connect(Application::new().websocket("/ws", || Silent), "/ws").await;
    Wait::new(Duration::from_millis(50))
        .next_message(&mut client)
        .await;
}

#[tokio::test]
async fn the_default_timeout_can_be_set_for_the_process() {
    // Longer than the built-in 10 s, so the other tests here are unaffected.
    set_default_timeout(Duration::from_secs(20));
    assert_eq!(default_timeout(), Duration::from_secs(20));
    assert_eq!(Wait::default().timeout(), Duration::from_secs(20));
}

#[test]
fn the_address_is_read_from_the_log_line() {
    let line = "\u{1b}[2m2026-11-30T04:43:27Z\u{1b}[0m INFO squall::application: listening on 127.0.0.1:42797";
    assert_eq!(
        listening_address(line),
        Some("127.0.0.1:42797".parse().unwrap())
    );
    assert_eq!(listening_address("something else"), None);
}
