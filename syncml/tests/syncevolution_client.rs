//! The acceptance client: SyncEvolution syncing the 5 sample vCards with
//! our sync-servers through the edge (HTTPS, dev CA), first slow (WBXML),
//! then two-way (XML) with changes on both sides, then a quiet two-way.
//! The client is configured for auth-md5 throughout: on first contact the
//! server has no md5 secret yet, challenges with auth-basic, and the client
//! switches by itself (see `auth.rs`).

mod common;
mod syncevolution;

use onebook_testkit::{Stack, TestUser};
use serde_json::Value;
use syncevolution::{Settings, SyncEvolution};

const PASSWORD: &str = "test-password-1";

async fn contact_names(stack: &Stack, user: &TestUser) -> Vec<String> {
    let page: Value = user
        .client
        .get(format!("{}/api/v1/contacts?limit=100", stack.edge_https))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<String> = page["contacts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| c["formatted_name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn syncevolution_slow_then_two_way_through_the_edge() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncevolution").await;
    let root = std::env::temp_dir().join(format!("onebook-se-{}", uuid::Uuid::new_v4().simple()));
    let se = SyncEvolution::new(&root);
    for entry in std::fs::read_dir(common::data_dir().join("vcards")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, se.data.join(path.file_name().unwrap())).unwrap();
    }
    let url = format!("{}/sync", stack.edge_https);
    let mut settings = Settings {
        url: &url,
        user: &user.email,
        password: PASSWORD,
        ca_file: &stack.ca_file,
        wbxml: true,
        auth: "md5",
        uri: "contacts",
        max_msg_size: 150_000,
    };

    se.configure(&settings);
    let slow = se.sync("slow");
    assert_eq!(slow.exit, 0, "{}", slow.output);
    assert_eq!(slow.stat("status"), "200", "{}", slow.output);
    assert_eq!(slow.source_stat("mode"), "slow");
    assert_eq!(slow.source_stat("stat-remote-added-total"), "5");
    let mut expected = vec![
        "Dr. Anna Maria Müller",
        "José García",
        "Mr. Bob J. Smith Jr.",
        "Ольга Петрова",
        "李伟",
    ];
    expected.sort();
    assert_eq!(contact_names(stack, &user).await, expected);

    // Changes on both sides, then two-way in XML with md5.
    let created = user
        .client
        .post(format!("{}/api/v1/contacts", stack.edge_https))
        .json(&serde_json::json!({"formatted_name": "Grace Hopper", "emails": [{"value": "grace@navy.example"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let olga = se.data.join("olga-30-minimal.vcf");
    let text = std::fs::read_to_string(&olga).unwrap();
    std::fs::write(
        &olga,
        text.replace("FN:Ольга Петрова", "FN:Ольга Петрова-Иванова"),
    )
    .unwrap();
    std::fs::remove_file(se.data.join("bob-21-plain.vcf")).unwrap();
    settings.wbxml = false;
    se.configure(&settings);
    let two_way = se.sync("two-way");
    assert_eq!(two_way.exit, 0, "{}", two_way.output);
    assert_eq!(two_way.source_stat("mode"), "two-way", "{}", two_way.output);
    assert_eq!(two_way.source_stat("stat-local-added-total"), "1");
    assert_eq!(two_way.source_stat("stat-remote-updated-total"), "1");
    assert_eq!(two_way.source_stat("stat-remote-removed-total"), "1");
    let mut expected = vec![
        "Dr. Anna Maria Müller",
        "Grace Hopper",
        "José García",
        "Ольга Петрова-Иванова",
        "李伟",
    ];
    expected.sort();
    assert_eq!(contact_names(stack, &user).await, expected);
    let files: Vec<String> = std::fs::read_dir(&se.data)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        files.iter().any(|f| f.contains("Grace Hopper")),
        "{files:?}"
    );

    // Nothing changed: a quiet two-way sync.
    let quiet = se.sync("two-way");
    assert_eq!(quiet.exit, 0, "{}", quiet.output);
    assert_eq!(quiet.source_stat("mode"), "two-way");
    for key in [
        "local-added",
        "local-updated",
        "local-removed",
        "remote-added",
        "remote-updated",
        "remote-removed",
    ] {
        assert_eq!(
            quiet.source_stat(&format!("stat-{key}-total")),
            "0",
            "{key}: {}",
            quiet.output
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// 60 contacts from the web reach a client that takes at most 10 KB per
/// message: our Sync goes out in several messages.
#[tokio::test]
async fn syncevolution_receives_a_split_server_package() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "syncevolution-split").await;
    for i in 0..60 {
        let response = user
            .client
            .post(format!("{}/api/v1/contacts", stack.edge_https))
            .json(&serde_json::json!({
                "formatted_name": format!("Person {i:02}"),
                "emails": [{"value": format!("p{i}@split.example")}],
                "note": "n".repeat(300),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let root = std::env::temp_dir().join(format!("onebook-se-{}", uuid::Uuid::new_v4().simple()));
    let se = SyncEvolution::new(&root);
    let url = format!("{}/sync", stack.edge_https);
    se.configure(&Settings {
        url: &url,
        user: &user.email,
        password: PASSWORD,
        ca_file: &stack.ca_file,
        wbxml: true,
        auth: "md5",
        uri: "card",
        max_msg_size: 10240,
    });
    let slow = se.sync("slow");
    assert_eq!(slow.exit, 0, "{}", slow.output);
    assert_eq!(
        slow.source_stat("stat-local-added-total"),
        "60",
        "{}",
        slow.output
    );
    assert_eq!(std::fs::read_dir(&se.data).unwrap().count(), 60);
    let quiet = se.sync("two-way");
    assert_eq!(quiet.exit, 0, "{}", quiet.output);
    assert_eq!(quiet.source_stat("mode"), "two-way");
    assert_eq!(quiet.source_stat("stat-local-added-total"), "0");
    let _ = std::fs::remove_dir_all(&root);
}
