//! The first real request path, end to end: client → edge (TLS) → webapp
//! instances → pgpool → both PostgreSQL nodes of the user's shard.

use onebook_testkit::{pg, Stack, TestUser};
use serde_json::{json, Value};
use std::collections::HashSet;
use uuid::Uuid;

#[tokio::test]
async fn healthz_through_the_edge_reports_every_shard_and_memcached() {
    let stack = Stack::get();
    let client = stack.client();
    let response = client
        .get(format!("{}/healthz", stack.edge_https))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    let shards = body["shards"].as_array().unwrap();
    assert_eq!(shards.len(), stack.shard_urls.len());
    assert!(shards.iter().all(|s| s["up"] == true), "{body}");
    assert_eq!(body["memcached"]["up"], true, "{body}");
}

/// The edge hashes the webapp pool on the session cookie, so each user
/// stays on one instance (and its memcached), while users spread over both.
#[tokio::test]
async fn sessions_stick_to_one_webapp_instance_and_spread_over_both() {
    let stack = Stack::get();
    let client = stack.client();
    let instance_for = |cookie: String| {
        let request = client
            .get(format!("{}/healthz", stack.edge_https))
            .header("cookie", format!("onebook_session={cookie}"));
        async move {
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            body["instance"].as_str().unwrap().to_string()
        }
    };
    let mut instances = HashSet::new();
    for n in 0..24 {
        let cookie = format!("user{n}.secret");
        let first = instance_for(cookie.clone()).await;
        for _ in 0..3 {
            assert_eq!(
                instance_for(cookie.clone()).await,
                first,
                "session {cookie} moved"
            );
        }
        instances.insert(first);
    }
    assert_eq!(instances.len(), 2, "all sessions hashed to {instances:?}");
}

#[tokio::test]
async fn a_contact_written_through_the_edge_is_on_both_nodes_of_its_shard() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "replicated").await;
    let response = user
        .client
        .post(format!("{}/api/v1/contacts", stack.edge_https))
        .json(&json!({
            "given_name": "Ada", "family_name": "Lovelace",
            "emails": [{"value": "ada@example.test", "label": "work"}],
            "phones": [{"value": "+44 20 7946 0018"}],
            "organization": "Analytical Engines"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();

    // Read back through the edge, twice: the second read may come from the
    // other instance or from memcached, and must be identical.
    for _ in 0..2 {
        let response = user
            .client
            .get(format!("{}/api/v1/contacts/{id}", stack.edge_https))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let read: Value = response.json().await.unwrap();
        assert_eq!(read, created);
        assert_eq!(read["formatted_name"], "Ada Lovelace");
    }

    // The row is on BOTH PostgreSQL nodes of the user's shard, read directly.
    let nodes = &stack.shard_nodes[user.shard_index()];
    assert_eq!(nodes.len(), 2);
    let mut seen = Vec::new();
    for node in nodes {
        let client = pg(node).await;
        let row = client
            .query_one(
                "SELECT display_name, card::text, version, created_at FROM contacts WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap_or_else(|e| panic!("contact {id} missing on {node}: {e}"));
        let values: (String, String, i64, chrono::DateTime<chrono::Utc>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        seen.push(values);
        let log = client
            .query_one(
                "SELECT count(*) FROM change_log WHERE contact_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(log.get::<_, i64>(0), 1, "change log on {node}");
    }
    assert_eq!(seen[0], seen[1], "nodes differ");
    assert_eq!(seen[0].0, "Ada Lovelace");
}

#[tokio::test]
async fn another_users_contact_is_a_plain_404() {
    let stack = Stack::get();
    let alice = TestUser::sign_up(stack, "alice").await;
    let bob = TestUser::sign_up(stack, "bob").await;
    let response = alice
        .client
        .post(format!("{}/api/v1/contacts", stack.edge_https))
        .json(&json!({"formatted_name": "Alice's secret friend"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stolen = bob
        .client
        .get(format!("{}/api/v1/contacts/{id}", stack.edge_https))
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 404);
    let unknown = bob
        .client
        .get(format!(
            "{}/api/v1/contacts/{}",
            stack.edge_https,
            Uuid::new_v4()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        stolen.text().await.unwrap(),
        unknown.text().await.unwrap(),
        "404 bodies must not differ"
    );
    let listed: Value = bob.get_json(stack, "/api/v1/contacts").await;
    assert_eq!(listed["total"], 0);
}

#[tokio::test]
async fn a_retried_create_with_the_same_id_records_one_contact() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "idempotent").await;
    let id = Uuid::new_v4();
    let body = json!({"id": id, "formatted_name": "Only Once"});
    for _ in 0..3 {
        let response = user
            .client
            .post(format!("{}/api/v1/contacts", stack.edge_https))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let listed: Value = user.get_json(stack, "/api/v1/contacts").await;
    assert_eq!(listed["total"], 1);
    let node = &stack.shard_nodes[user.shard_index()][0];
    let log = pg(node)
        .await
        .query_one(
            "SELECT count(*) FROM change_log WHERE contact_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(log.get::<_, i64>(0), 1);
}

#[tokio::test]
async fn bad_input_is_a_clear_400_naming_the_field() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "badinput").await;
    let url = format!("{}/api/v1/contacts", stack.edge_https);
    let cases = [
        (
            json!({"formatted_name": "X", "emails": [{"value": "ok@x.test"}, {"value": "nope"}]}),
            "emails[1].value",
        ),
        (json!({"formatted_name": 42}), "formatted_name"),
        (json!({"formatted_name": "X", "colour": "red"}), "colour"),
    ];
    for (body, field) in cases {
        let response = user.client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        let text = error.to_string();
        assert!(text.contains(field), "{body} → {error}");
    }
    let malformed = user
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"formatted_name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let anonymous = Stack::get().client().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn users_are_placed_on_every_shard() {
    let stack = Stack::get();
    let mut shards = HashSet::new();
    for _ in 0..6 {
        let user = TestUser::sign_up(stack, "placement").await;
        shards.insert(user.shard.clone());
        if shards.len() == stack.shard_urls.len() {
            break;
        }
    }
    assert_eq!(
        shards.len(),
        stack.shard_urls.len(),
        "least-loaded placement used only {shards:?}"
    );
}

/// Many writers racing on one contact (conditional updates through both
/// webapp instances) and on the user's change sequence (creates) must leave
/// both PostgreSQL nodes of the shard attached and identical. pgpool detaches
/// a node when the nodes answer one statement differently, which is how drift
/// between the nodes shows first (docs/datatier.md, rule 2).
#[tokio::test]
async fn racing_writers_leave_both_nodes_attached_and_identical() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "racing").await;
    let created: Value = user
        .post_json(
            stack,
            "/api/v1/contacts",
            &json!({"formatted_name": "Contested"}),
        )
        .await;
    let path = format!("/api/v1/contacts/{}", created["id"].as_str().unwrap());
    let url = format!("{}{path}", stack.edge_https);

    const UPDATERS: usize = 12;
    const CREATORS: usize = 6;
    let mut tasks = Vec::new();
    for writer in 0..UPDATERS {
        let (client, url) = (user.client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            // Read-modify-write with If-Match until this writer's update wins once.
            for _ in 0..200 {
                let current = client.get(&url).send().await.unwrap();
                assert_eq!(current.status(), 200);
                let etag = current.headers()["etag"].to_str().unwrap().to_string();
                let response = client
                    .put(&url)
                    .header("if-match", &etag)
                    .json(
                        &json!({"formatted_name": "Contested", "note": format!("writer {writer}")}),
                    )
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    200 => return,
                    412 => continue,
                    other => panic!("writer {writer}: {other} {:?}", response.text().await),
                }
            }
            panic!("writer {writer} never won");
        }));
    }
    for creator in 0..CREATORS {
        let (client, base) = (user.client.clone(), stack.edge_https.clone());
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(format!("{base}/api/v1/contacts"))
                .json(&json!({"formatted_name": format!("Created {creator}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let final_state: Value = user.get_json(stack, &path).await;
    assert_eq!(final_state["version"], 1 + UPDATERS as i64);

    // pgpool still has both nodes of the shard attached...
    let pool = pg(&stack.shard_urls[user.shard_index()]).await;
    let nodes = pool.simple_query("SHOW POOL_NODES").await.unwrap();
    let statuses: Vec<String> = nodes
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get("status").map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, ["up", "up"], "pgpool detached a node");

    // ...and both nodes hold the same contacts, change log and sequence.
    let user_id = Uuid::parse_str(&user.id).unwrap();
    let mut per_node = Vec::new();
    for node in &stack.shard_nodes[user.shard_index()] {
        let client = pg(node).await;
        let contacts: Vec<(Uuid, String, i64)> = client
            .query(
                "SELECT id, card::text, version FROM contacts WHERE user_id = $1 ORDER BY id",
                &[&user_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let log: Vec<(i64, Uuid, String)> = client
            .query(
                "SELECT seq, contact_id, op FROM change_log WHERE user_id = $1 ORDER BY seq",
                &[&user_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let seq: i64 = client
            .query_one("SELECT change_seq FROM users WHERE id = $1", &[&user_id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(contacts.len(), 1 + CREATORS, "contacts on {node}");
        assert_eq!(log.len(), 1 + CREATORS + UPDATERS, "change log on {node}");
        per_node.push((contacts, log, seq));
    }
    assert_eq!(per_node[0], per_node[1], "the nodes differ");
}
