//! The contacts API against the real stack: update with ETags, delete,
//! bulk delete, search, the change feed, and freshness across instances.

use onebook_testkit::{Stack, TestUser};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn update_needs_the_current_etag_and_delete_leaves_nothing_readable() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "crud").await;
    let created = user
        .create_contact(stack, &json!({"formatted_name": "Grace Hopper"}))
        .await;
    let path = format!("/api/v1/contacts/{}", created["id"].as_str().unwrap());
    let url = format!("{}{path}", stack.edge_https);

    let got = user.client.get(&url).send().await.unwrap();
    let etag = got.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, "\"v1\"");

    let updated = user
        .client
        .put(&url)
        .header("if-match", &etag)
        .json(&json!({"formatted_name": "Grace Brewster Hopper", "organization": "US Navy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    assert_eq!(updated.headers()["etag"], "\"v2\"");
    let body: Value = updated.json().await.unwrap();
    assert_eq!(body["organization"], "US Navy");
    assert_eq!(body["version"], 2);

    // The old ETag is stale now: 412, and nothing changes.
    let stale = user
        .client
        .put(&url)
        .header("if-match", &etag)
        .json(&json!({"formatted_name": "Lost update"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let now: Value = user.get_json(stack, &path).await;
    assert_eq!(now["formatted_name"], "Grace Brewster Hopper");

    assert_eq!(user.client.delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(user.client.get(&url).send().await.unwrap().status(), 404);
    // Deleting again is harmless; updating a deleted contact is a 404.
    assert_eq!(user.client.delete(&url).send().await.unwrap().status(), 204);
    let put = user
        .client
        .put(&url)
        .json(&json!({"formatted_name": "Ghost"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 404);
}

#[tokio::test]
async fn bulk_delete_reports_what_it_did_not_find() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "bulk").await;
    let a = user
        .create_contact(stack, &json!({"formatted_name": "A"}))
        .await;
    let b = user
        .create_contact(stack, &json!({"formatted_name": "B"}))
        .await;
    let keep = user
        .create_contact(stack, &json!({"formatted_name": "Keep"}))
        .await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let response = user
        .client
        .post(format!("{}/api/v1/contacts/bulk-delete", stack.edge_https))
        .json(&json!({"ids": [a["id"], b["id"], unknown]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["deleted"].as_array().unwrap().len(), 2);
    assert_eq!(outcome["not_found"], json!([unknown]));
    let listed: Value = user.get_json(stack, "/api/v1/contacts").await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["contacts"][0]["id"], keep["id"]);
}

#[tokio::test]
async fn search_matches_names_emails_phones_and_organisations() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "search").await;
    user.create_contact(stack, &json!({"given_name": "Ada", "family_name": "Lovelace", "emails": [{"value": "ada@engines.test"}]})).await;
    user.create_contact(stack, &json!({"formatted_name": "Charles Babbage", "organization": "Difference Engines", "phones": [{"value": "+44 20 7946 0999"}]})).await;
    user.create_contact(stack, &json!({"formatted_name": "100% Real_Name"}))
        .await;
    let search = |q: &str| {
        let url = format!("{}/api/v1/contacts", stack.edge_https);
        let request = user.client.get(url).query(&[("q", q)]);
        async move {
            let page: Value = request.send().await.unwrap().json().await.unwrap();
            let mut names: Vec<String> = page["contacts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["formatted_name"].as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(search("lovelace").await, ["Ada Lovelace"]);
    assert_eq!(search("ENGINES").await, ["Ada Lovelace", "Charles Babbage"]);
    assert_eq!(search("engines charles").await, ["Charles Babbage"]);
    assert_eq!(search("7946").await, ["Charles Babbage"]);
    assert_eq!(search("ada@").await, ["Ada Lovelace"]);
    // LIKE wildcards in the query are literal characters.
    assert_eq!(search("100%").await, ["100% Real_Name"]);
    assert_eq!(search("l_ve").await, Vec::<String>::new());
    assert!(search("nobody-matches-this").await.is_empty());

    let sorted: Value = user
        .get_json(stack, "/api/v1/contacts?sort=-name&limit=2")
        .await;
    assert_eq!(sorted["total"], 3);
    assert_eq!(sorted["contacts"].as_array().unwrap().len(), 2);
    assert_eq!(sorted["contacts"][0]["formatted_name"], "Ada Lovelace");
    let bad = user
        .client
        .get(format!(
            "{}/api/v1/contacts?sort=sideways",
            stack.edge_https
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_change_feed_lists_every_change_in_order() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "feed").await;
    let first = user
        .create_contact(stack, &json!({"formatted_name": "One"}))
        .await;
    let url = format!(
        "{}/api/v1/contacts/{}",
        stack.edge_https,
        first["id"].as_str().unwrap()
    );
    user.client
        .put(&url)
        .json(&json!({"formatted_name": "One, renamed"}))
        .send()
        .await
        .unwrap();
    user.create_contact(stack, &json!({"formatted_name": "Two"}))
        .await;
    user.client.delete(&url).send().await.unwrap();

    let feed: Value = user.get_json(stack, "/api/v1/changes?since=0").await;
    let ops: Vec<&str> = feed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["create", "update", "create", "delete"]);
    let seqs: Vec<i64> = feed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(feed["next_since"], 4);
    let rest: Value = user.get_json(stack, "/api/v1/changes?since=2").await;
    assert_eq!(rest["changes"].as_array().unwrap().len(), 2);
}

/// Each webapp instance has its own memcached. A write through one must
/// never be followed by a stale read through the other: the cache keys
/// carry the user's data version, which the write bumped.
#[tokio::test]
async fn a_write_on_one_instance_is_never_read_stale_on_the_other() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "fresh").await;
    let created = user
        .create_contact(stack, &json!({"formatted_name": "Version 0"}))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let direct = reqwest::Client::new();
    let instances = ["http://127.0.0.1:8101", "http://127.0.0.1:8102"];
    for round in 1..=10 {
        let (writer, reader) = if round % 2 == 0 {
            (instances[0], instances[1])
        } else {
            (instances[1], instances[0])
        };
        // Warm the reader's cache with the current state first.
        for path in [
            format!("/api/v1/contacts/{id}"),
            "/api/v1/contacts".to_string(),
        ] {
            let warm = direct
                .get(format!("{reader}{path}"))
                .bearer_auth(&user.token)
                .send()
                .await
                .unwrap();
            assert_eq!(warm.status(), 200);
        }
        let name = format!("Version {round}");
        let response = direct
            .put(format!("{writer}/api/v1/contacts/{id}"))
            .bearer_auth(&user.token)
            .json(&json!({"formatted_name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let one: Value = direct
            .get(format!("{reader}/api/v1/contacts/{id}"))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(one["formatted_name"], name, "stale single read on {reader}");
        let list: Value = direct
            .get(format!("{reader}/api/v1/contacts"))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            list["contacts"][0]["formatted_name"], name,
            "stale list on {reader}"
        );
    }
}
