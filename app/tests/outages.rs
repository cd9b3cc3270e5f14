//! A PostgreSQL node dies under a shard; writes through the whole stack keep
//! succeeding, and online recovery brings the node back identical.
//!
//! This test stops and rebuilds a node, which makes pgpool drop every client
//! connection of that shard, so `./dev test` runs it on its own, after the
//! other tests.

use onebook_testkit::{pg, Stack, TestUser};
use serde_json::{json, Value};
use uuid::Uuid;

async fn contact_ids_on(node: &str, user_id: &Uuid) -> Vec<Uuid> {
    let client = pg(node).await;
    let rows = client
        .query(
            "SELECT id FROM contacts WHERE user_id = $1 ORDER BY id",
            &[user_id],
        )
        .await
        .unwrap_or_else(|e| panic!("{node}: {e}"));
    rows.iter().map(|r| r.get(0)).collect()
}

async fn stop_node_write_recover(node_index: usize) {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, &format!("failover{node_index}")).await;
    let user_id = Uuid::parse_str(&user.id).unwrap();
    let shard = user.shard_index();
    let url = format!("{}/api/v1/contacts", stack.edge_https);

    let before = user
        .client
        .post(&url)
        .json(&json!({"formatted_name": "Before"}))
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), 201);

    let shard_arg = (shard + 1).to_string();
    let node_arg = node_index.to_string();
    let stopped = stack.datatier(&["stop-node", &shard_arg, &node_arg]);
    assert!(
        stopped.status.success(),
        "stop-node: {}",
        String::from_utf8_lossy(&stopped.stderr)
    );

    // Every write must succeed while the node is down: the first ones hit
    // pgpool's failover, which the domain layer retries.
    let mut written = Vec::new();
    for i in 0..10 {
        let response = user
            .client
            .post(&url)
            .json(&json!({"formatted_name": format!("During outage {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "write {i} with node {node_index} down: {:?}",
            response.text().await
        );
        let body: Value = response.json().await.unwrap();
        written.push(body["id"].as_str().unwrap().to_string());
    }
    let listed: Value = user
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 11);

    let recovered = stack.datatier(&["recover", &shard_arg, &node_arg]);
    assert!(
        recovered.status.success(),
        "recover: {}{}",
        String::from_utf8_lossy(&recovered.stdout),
        String::from_utf8_lossy(&recovered.stderr)
    );

    // After recovery both nodes hold the same rows, outage writes included.
    let nodes = &stack.shard_nodes[shard];
    let on_first = contact_ids_on(&nodes[0], &user_id).await;
    let on_second = contact_ids_on(&nodes[1], &user_id).await;
    assert_eq!(on_first.len(), 11);
    assert_eq!(on_first, on_second);

    // And the stack still writes to both.
    let after = user
        .client
        .post(&url)
        .json(&json!({"formatted_name": "After"}))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 201);
    assert_eq!(contact_ids_on(&nodes[0], &user_id).await.len(), 12);
    assert_eq!(contact_ids_on(&nodes[1], &user_id).await.len(), 12);
}

#[tokio::test]
async fn writes_survive_losing_a_standby_node_and_recovery_resyncs_it() {
    stop_node_write_recover(1).await;
}

#[tokio::test]
async fn writes_survive_losing_the_main_node_and_recovery_resyncs_it() {
    stop_node_write_recover(0).await;
}
