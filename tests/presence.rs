//! Presence in one process: joining with a presence value, listing members
//! with connection counts, following join/leave diffs from a handler.

use serde_json::{json, Value};
use squall::testing::{next_text, within, TestServer};
use squall::{Application, Member, Message, Presence, PresenceDiff, WebSocket, WebSocketHandler};

/// Joins `room` as the `user` query argument (meta: `{"name": user}`); with
/// `?watch=1`, forwards the room's presence diffs to its client as JSON.
struct Present;

impl WebSocketHandler for Present {
    async fn open(&mut self, ws: &WebSocket) {
        let user = ws.query_argument("user").unwrap_or_default().into_owned();
        if ws.query_argument("watch").is_some() {
            let mut watch = ws.watch_presence("room");
            let sender = ws.sender();
            tokio::spawn(async move {
                while let Ok(diff) = watch.next().await {
                    if sender.send(json!(diff)).is_err() {
                        break;
                    }
                }
            });
        }
        ws.join_with_presence("room", Presence::new(&user, json!({ "name": user })));
        ws.write_message("joined").await.ok();
    }

    async fn on_message(&mut self, _ws: &WebSocket, _message: Message) {}
}

fn app() -> Application {
    Application::new().websocket("/", || Present)
}

fn member(user: &str, connections: usize) -> Member {
    Member {
        user: user.to_owned(),
        meta: json!({ "name": user }),
        connections,
    }
}

async fn next_diff(client: &mut squall::Client) -> PresenceDiff {
    serde_json::from_str(&next_text(client).await).expect("a diff")
}

#[tokio::test]
async fn members_list_each_user_once_with_a_connection_count() {
    let server = TestServer::start(app()).await;
    let handle = server.handle().clone();
    let mut clients = Vec::new();
    for user in ["ada", "bob", "ada"] {
        let mut client = server.connect(&format!("/?user={user}")).await;
        assert_eq!(next_text(&mut client).await, "joined");
        clients.push(client);
    }
    let members = handle.members("room").await.expect("members");
    assert_eq!(members, vec![member("ada", 2), member("bob", 1)]);
    assert!(handle
        .members("elsewhere")
        .await
        .expect("members")
        .is_empty());

    // Closing one of ada's connections leaves her a member with one.
    let mut watch = handle.watch_presence("room");
    clients[0].close(1000, "").await;
    let diff = within("a leave diff", watch.next()).await.expect("diff");
    assert_eq!(diff.leaves, vec![member("ada", 1)]);
    assert_eq!(
        handle.members("room").await.expect("members"),
        vec![member("ada", 1), member("bob", 1)]
    );
    clients[2].close(1000, "").await;
    within("a leave diff", watch.next()).await.expect("diff");
    assert_eq!(
        handle.members("room").await.expect("members"),
        vec![member("bob", 1)]
    );
    drop(clients);
    server.shutdown().await;
}

#[tokio::test]
async fn a_handler_follows_joins_and_leaves_as_diffs() {
    let server = TestServer::start(app()).await;
    let mut watcher = server.connect("/?user=wanda&watch=1").await;
    // It sees its own join (the watch started before it joined); the
    // forwarding task and `open` race, so either may come first.
    let mut first = [next_text(&mut watcher).await, next_text(&mut watcher).await];
    first.sort_by_key(|text| text != "joined");
    assert_eq!(first[0], "joined");
    let own: PresenceDiff = serde_json::from_str(&first[1]).expect("a diff");
    assert_eq!(own.group, "room");
    assert_eq!(own.joins, vec![member("wanda", 1)]);

    let mut bob = server.connect("/?user=bob").await;
    assert_eq!(next_text(&mut bob).await, "joined");
    let join = next_diff(&mut watcher).await;
    assert_eq!((join.joins, join.leaves), (vec![member("bob", 1)], vec![]));

    bob.close(1000, "").await;
    let leave = next_diff(&mut watcher).await;
    assert_eq!(
        (leave.joins, leave.leaves),
        (vec![], vec![member("bob", 1)])
    );
    drop(watcher);
    server.shutdown().await;
}

#[tokio::test]
async fn joining_twice_or_without_presence_changes_no_member() {
    struct Plain;
    impl WebSocketHandler for Plain {
        async fn open(&mut self, ws: &WebSocket) {
            ws.join("room");
            // Already a member: the presence is refused.
            let again = ws.join_with_presence("room", Presence::user("ghost"));
            ws.write_message(Value::Bool(again)).await.ok();
        }
        async fn on_message(&mut self, _ws: &WebSocket, _message: Message) {}
    }
    let server = TestServer::start(Application::new().websocket("/", || Plain)).await;
    let mut client = server.connect("/").await;
    assert_eq!(next_text(&mut client).await, "false");
    assert!(server
        .handle()
        .members("room")
        .await
        .expect("members")
        .is_empty());
    assert_eq!(server.handle().group_size("room"), 1);
    drop(client);
    server.shutdown().await;
}
