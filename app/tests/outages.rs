//! Outages of real parts of the data tier, through the whole stack:
//! a PostgreSQL node dies under a shard (writes keep succeeding, and online
//! recovery brings the node back identical), and RabbitMQ restarts (every
//! change event is still delivered, none lost).
//!
//! These tests stop real services, which disturbs everything else using
//! them, so `./dev test` runs this binary on its own, one test at a time,
//! after the other tests.

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use onebook_testkit::{pg, Stack, TestUser};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;
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
    let path = "/api/v1/contacts";
    let url = format!("{}{path}", stack.edge_https);

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
    let listed: Value = user.get_json(stack, path).await;
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

async fn create_contacts(user: &TestUser, stack: &Stack, names: &[&str]) {
    for name in names {
        let response = user
            .client
            .post(format!("{}/api/v1/contacts", stack.edge_https))
            .json(&json!({ "formatted_name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "creating {name}");
    }
}

#[tokio::test]
async fn every_change_event_is_delivered_across_a_rabbitmq_restart() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "events").await;
    let user_id = Uuid::parse_str(&user.id).unwrap();
    let queue = format!("test.events.{}", Uuid::new_v4().simple());

    // A durable queue of our own, bound before the first change, survives
    // the broker restart with whatever it holds.
    {
        let connection = Connection::connect(&stack.amqp_url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                "onebook.changes".into(),
                ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                "onebook.changes".into(),
                "contact.*".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "bound".into()).await;
    }

    create_contacts(&user, stack, &["Before 1", "Before 2", "Before 3"]).await;
    let stopped = stack.datatier(&["stop-rabbitmq"]);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    // Writes don't need the broker: their events wait in the outbox.
    create_contacts(&user, stack, &["During 1", "During 2", "During 3"]).await;
    let started = stack.datatier(&["start-rabbitmq"]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    create_contacts(&user, stack, &["After 1", "After 2", "After 3"]).await;

    let node = &stack.shard_nodes[user.shard_index()][0];
    let expected: HashSet<String> = pg(node)
        .await
        .query("SELECT id FROM outbox WHERE user_id = $1", &[&user_id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Uuid>(0).to_string())
        .collect();
    assert_eq!(expected.len(), 9, "one event per change");

    let connection = Connection::connect(&stack.amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "outage-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !expected.is_subset(&seen) {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await;
        let Ok(Some(delivery)) = next else {
            panic!(
                "only {} of {} events arrived: missing {:?}",
                expected.intersection(&seen).count(),
                expected.len(),
                expected.difference(&seen).collect::<Vec<_>>()
            );
        };
        let delivery = delivery.unwrap();
        if let Some(id) = delivery.properties.message_id() {
            seen.insert(id.to_string());
        }
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;

    // Every event is marked published on both nodes.
    for node in &stack.shard_nodes[user.shard_index()] {
        let pending: i64 = pg(node)
            .await
            .query_one(
                "SELECT count(*) FROM outbox WHERE user_id = $1 AND published_at IS NULL",
                &[&user_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(pending, 0, "unpublished events on {node}");
    }
}

/// memcached is an optimisation: with webapp-1's memcached gone, its
/// requests are served from PostgreSQL, none fails, and once memcached is
/// back the instance uses it again.
#[tokio::test]
async fn a_dead_memcached_costs_speed_not_requests() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "nocache").await;
    let direct = reqwest::Client::new();
    let webapp1 = "http://127.0.0.1:8101";
    let created = direct
        .post(format!("{webapp1}/api/v1/contacts"))
        .bearer_auth(&user.token)
        .json(&json!({"formatted_name": "Cached Or Not"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let pid_file = stack.stack_dir.join("pid/memcached-1.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
    let pid = pid.trim();
    let killed = std::process::Command::new("kill")
        .arg(pid)
        .status()
        .unwrap();
    assert!(killed.success(), "kill {pid}");
    let gone_by = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        || tokio::net::TcpStream::connect("127.0.0.1:11211")
            .await
            .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < gone_by,
            "memcached {pid} did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for i in 0..20 {
        let url = if i % 2 == 0 {
            format!("{webapp1}/api/v1/contacts/{id}")
        } else {
            format!("{webapp1}/api/v1/contacts")
        };
        let response = direct
            .get(&url)
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {i} with memcached down");
    }
    let health = direct
        .get(format!("{webapp1}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503, "healthz reports the missing cache");
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["memcached"]["up"], false);

    // scripts/datatier.sh up starts what is missing and nothing else.
    let up = stack.datatier(&["up"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health = direct
            .get(format!("{webapp1}/healthz"))
            .send()
            .await
            .unwrap();
        if health.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "webapp-1 never saw memcached again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
