//! Linked accounts (for the sync bots) and SyncML devices through the API,
//! against the real stack. The SyncML side is written with the same domain
//! calls the sync server makes (DevInf, anchors, maps), and the bots' side
//! (reading a secret, recording a sync) with theirs.

use onebook_app::config::{Overrides, WebappConfig};
use onebook_domain::accounts::Viewer;
use onebook_domain::links::{LinkKey, SyncStatus};
use onebook_domain::syncml_state::SyncAnchors;
use onebook_domain::Domain;
use onebook_testkit::{pg, repo_root, unique_email, Stack, TestUser};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// The domain layer as the sync server and the bots see it, with the dev
/// config's link key and one connection per shard (pgpool caps clients).
fn domain(stack: &Stack) -> (Domain, LinkKey) {
    let path = repo_root().join("configs/webapp.dev.toml");
    let mut config = WebappConfig::load(&path, &Overrides::default()).unwrap();
    config.database.pool_size = 1;
    for (shard, url) in config.database.shards.iter_mut().zip(&stack.shard_urls) {
        shard.url = url.clone();
    }
    let key = config.links.load("webapp.dev.toml").unwrap().unwrap();
    (Domain::new(&config.database, &config.cache).unwrap(), key)
}

async fn viewer(domain: &Domain, user: &TestUser) -> Viewer {
    domain.viewer_by_email(&user.email).await.unwrap().unwrap()
}

async fn post_link(user: &TestUser, stack: &Stack, body: Value) -> (StatusCode, Value, String) {
    let response = user
        .client
        .post(format!("{}/api/v1/linked-accounts", stack.edge_https))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

const REFRESH_TOKEN: &str = "1//0gRefreshTokenThatMustNeverBeShown";
const HIGHRISE_TOKEN: &str = "605b32dd-highrise-api-token";

#[tokio::test]
async fn links_are_added_listed_and_removed_and_never_show_their_secret() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "links").await;
    let base = format!("{}/api/v1/linked-accounts", stack.edge_https);
    assert_eq!(
        user.get_json(stack, "/api/v1/linked-accounts").await,
        json!([])
    );

    let google = unique_email("ada").to_uppercase();
    let id = Uuid::now_v7();
    let body = json!({"id": id, "service": "google", "account": google, "secret": REFRESH_TOKEN});
    let (status, created, text) = post_link(&user, stack, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert_eq!(created["id"], id.to_string());
    assert_eq!(created["service"], "google");
    assert_eq!(created["account"], google.to_lowercase());
    assert_eq!(created["last_sync"]["status"], "never");
    assert!(!text.contains(REFRESH_TOKEN), "{text}");
    // A retry with the same id is the same link, not a second one.
    let (status, again, _) = post_link(&user, stack, body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["id"], created["id"]);
    // The same Google account linked again under a new id: a conflict.
    let (status, _, text) = post_link(
        &user,
        stack,
        json!({"service": "google", "account": google, "secret": "other"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");

    let (status, highrise, text) = post_link(
        &user,
        stack,
        json!({"service": "highrise", "account": "https://Acme-Co.highrisehq.com/", "secret": HIGHRISE_TOKEN}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert_eq!(highrise["account"], "acme-co");

    let listed = user
        .client
        .get(&base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listed.contains(REFRESH_TOKEN) && !listed.contains(HIGHRISE_TOKEN));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let services: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["google", "highrise"]);

    // At rest the secret is sealed: not in the row, on either node.
    let shard = user.shard_index();
    for node in &stack.shard_nodes[shard] {
        let row = pg(node)
            .await
            .query_one(
                "SELECT secret_sealed FROM linked_accounts WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let sealed: Vec<u8> = row.get(0);
        assert!(!sealed
            .windows(REFRESH_TOKEN.len())
            .any(|w| w == REFRESH_TOKEN.as_bytes()));
    }

    // The bot opens it, syncs, and records the outcome; the web shows it.
    let (domain, key) = domain(stack);
    let owner = viewer(&domain, &user).await;
    assert_eq!(
        domain
            .linked_account_secret(&owner, &key, id)
            .await
            .unwrap(),
        REFRESH_TOKEN
    );
    domain
        .record_link_sync(&owner, id, SyncStatus::NeedsReauth, Some("invalid_grant"))
        .await
        .unwrap();
    let shown = user
        .get_json(stack, &format!("/api/v1/linked-accounts/{id}"))
        .await;
    assert_eq!(shown["last_sync"]["status"], "needs_reauth", "{shown}");
    assert_eq!(shown["last_sync"]["error"], "invalid_grant");
    assert!(shown["last_sync"]["at"].is_string());

    // Unlink: gone, and its secret with it.
    let url = format!("{base}/{id}");
    assert_eq!(user.client.delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(user.client.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(user.client.delete(&url).send().await.unwrap().status(), 404);
    assert!(domain
        .linked_account_secret(&owner, &key, id)
        .await
        .is_err());
    let left = user.get_json(stack, "/api/v1/linked-accounts").await;
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
}

#[tokio::test]
async fn bad_links_are_400s_naming_the_field() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "badlinks").await;
    let email = unique_email("g");
    let cases = [
        (json!({"account": email, "secret": "s"}), "service"),
        (
            json!({"service": "yahoo", "account": email, "secret": "s"}),
            "service",
        ),
        (
            json!({"service": 7, "account": email, "secret": "s"}),
            "service",
        ),
        (json!({"service": "google", "secret": "s"}), "account"),
        (
            json!({"service": "google", "account": "not-an-email", "secret": "s"}),
            "account",
        ),
        (
            json!({"service": "highrise", "account": "acme corp", "secret": "s"}),
            "account",
        ),
        (json!({"service": "google", "account": email}), "secret"),
        (
            json!({"service": "google", "account": email, "secret": "  "}),
            "secret",
        ),
        (
            json!({"service": "google", "account": email, "secret": "x".repeat(5000)}),
            "secret",
        ),
        (
            json!({"service": "google", "account": email, "secret": ["s"]}),
            "secret",
        ),
        (
            json!({"id": "nope", "service": "google", "account": email, "secret": "s"}),
            "id",
        ),
    ];
    for (body, field) in cases {
        let (status, error, text) = post_link(&user, stack, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert_eq!(error["field"], field, "{body}: {text}");
    }
    assert_eq!(
        user.get_json(stack, "/api/v1/linked-accounts").await,
        json!([])
    );
}

const DEVINF: &str = "<DevInf xmlns=\"syncml:devinf\"><VerDTD>1.2</VerDTD><Man>Patrick Ohly</Man>\
    <Mod>SyncEvolution</Mod><OEM>Synthesis AG</OEM><FwV>2.0.0</FwV><SwV>3.4.0.47</SwV>\
    <HwV>unknown</HwV><DevID>IMEI:352099001761481</DevID><DevTyp>phone</DevTyp>\
    <DataStore><SourceRef>./contacts</SourceRef></DataStore></DevInf>";

/// What the sync server stores after a completed sync of `dev_id`.
async fn synced_device(domain: &Domain, viewer: &Viewer, dev_id: &str, contacts: &[Uuid]) {
    domain
        .set_syncml_devinf(viewer, dev_id, DEVINF.as_bytes())
        .await
        .unwrap();
    let anchors = SyncAnchors {
        client_next: "20261127T120000Z".into(),
        server_next: "s-42".into(),
        last_seq: viewer.change_seq,
    };
    domain
        .set_syncml_anchors(viewer, dev_id, "./contacts", &anchors)
        .await
        .unwrap();
    let maps: Vec<(String, Option<Uuid>)> = contacts
        .iter()
        .enumerate()
        .map(|(i, id)| (format!("{}", i + 1), Some(*id)))
        .collect();
    domain
        .set_syncml_maps(viewer, dev_id, "./contacts", &maps)
        .await
        .unwrap();
    domain
        .syncml_short_guids(viewer, dev_id, "./contacts", contacts)
        .await
        .unwrap();
}

async fn create_contact(user: &TestUser, stack: &Stack, name: &str) -> Uuid {
    let body = user
        .create_contact(stack, &json!({"formatted_name": name}))
        .await;
    body["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn devices_show_their_devinf_and_anchors_and_a_forgotten_one_slow_syncs() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "devices").await;
    assert_eq!(user.get_json(stack, "/api/v1/devices").await, json!([]));
    let a = create_contact(&user, stack, "Ada Phone").await;
    let b = create_contact(&user, stack, "Bob Phone").await;
    let (domain, _) = domain(stack);
    let owner = viewer(&domain, &user).await;
    let phone = "IMEI:352099001761481";
    synced_device(&domain, &owner, phone, &[a, b]).await;
    // A second device that synced without ever sending its DevInf.
    let laptop = "sc-pim-5f0c6e1b";
    let anchors = SyncAnchors {
        client_next: "1".into(),
        server_next: "2".into(),
        last_seq: 1,
    };
    domain
        .set_syncml_anchors(&owner, laptop, "addressbook", &anchors)
        .await
        .unwrap();

    let devices = user.get_json(stack, "/api/v1/devices").await;
    let devices = devices.as_array().unwrap();
    assert_eq!(devices.len(), 2, "{devices:?}");
    // Latest sync first: the laptop synced last.
    assert_eq!(devices[0]["dev_id"], laptop);
    assert!(devices[0]["info"].is_null());
    let shown = &devices[1];
    assert_eq!(shown["dev_id"], phone);
    assert_eq!(shown["info"]["manufacturer"], "Patrick Ohly");
    assert_eq!(shown["info"]["model"], "SyncEvolution");
    assert_eq!(shown["info"]["device_type"], "phone");
    assert_eq!(shown["info"]["software_version"], "3.4.0.47");
    let store = &shown["datastores"][0];
    assert_eq!(store["datastore"], "./contacts");
    assert_eq!(store["client_anchor"], "20261127T120000Z");
    assert_eq!(store["server_anchor"], "s-42");
    assert_eq!(store["last_seq"], owner.change_seq);
    assert_eq!(store["mapped_items"], 2);
    assert_eq!(shown["last_sync_at"], store["last_sync_at"]);

    assert_eq!(
        domain
            .syncml_guid_contacts(&owner, phone, "./contacts")
            .await
            .unwrap()
            .len(),
        2
    );

    // Forget the phone: no anchors, maps or DevInf are left, so the sync
    // server answers its next sync with a slow sync. The laptop is untouched.
    let url = format!(
        "{}/api/v1/devices/{}",
        stack.edge_https,
        phone.replace(':', "%3A")
    );
    assert_eq!(user.client.delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(
        domain
            .syncml_anchors(&owner, phone, "./contacts")
            .await
            .unwrap(),
        None
    );
    assert!(domain
        .syncml_maps(&owner, phone, "./contacts")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(domain.syncml_devinf(&owner, phone).await.unwrap(), None);
    assert!(domain
        .syncml_guid_contacts(&owner, phone, "./contacts")
        .await
        .unwrap()
        .is_empty());
    assert!(domain
        .syncml_anchors(&owner, laptop, "addressbook")
        .await
        .unwrap()
        .is_some());
    let devices = user.get_json(stack, "/api/v1/devices").await;
    assert_eq!(devices.as_array().unwrap().len(), 1, "{devices}");
    assert_eq!(devices[0]["dev_id"], laptop);
    assert_eq!(user.client.delete(&url).send().await.unwrap().status(), 404);
    // The contacts themselves stay.
    let kept = user.get_json(stack, "/api/v1/contacts").await;
    assert_eq!(kept["total"], 2, "{kept}");
}

#[tokio::test]
async fn another_users_links_and_devices_are_404_and_untouched() {
    let stack = Stack::get();
    let alice = TestUser::sign_up(stack, "iso-links-a").await;
    let bob = TestUser::sign_up(stack, "iso-links-b").await;
    let (status, link, text) = post_link(
        &alice,
        stack,
        json!({"service": "highrise", "account": "alice-co", "secret": HIGHRISE_TOKEN}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let (domain, _) = domain(stack);
    let owner = viewer(&domain, &alice).await;
    let contact = create_contact(&alice, stack, "Alice Contact").await;
    let dev_id = "IMEI:490154203237518";
    synced_device(&domain, &owner, dev_id, &[contact]).await;

    let link_url = format!(
        "{}/api/v1/linked-accounts/{}",
        stack.edge_https,
        link["id"].as_str().unwrap()
    );
    let device_url = format!(
        "{}/api/v1/devices/{}",
        stack.edge_https,
        dev_id.replace(':', "%3A")
    );
    let get = bob.client.get(&link_url).send().await.unwrap();
    assert_eq!(get.status(), 404);
    let body = get.text().await.unwrap();
    assert!(
        !body.contains("alice") && !body.contains("highrise"),
        "{body}"
    );
    assert_eq!(
        bob.client.delete(&link_url).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        bob.client
            .delete(&device_url)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        bob.get_json(stack, "/api/v1/linked-accounts").await,
        json!([])
    );
    assert_eq!(bob.get_json(stack, "/api/v1/devices").await, json!([]));
    // Alice still has both, unchanged.
    let links = alice.get_json(stack, "/api/v1/linked-accounts").await;
    assert_eq!(links[0]["id"], link["id"], "{links}");
    assert_eq!(links.as_array().unwrap().len(), 1);
    let devices = alice.get_json(stack, "/api/v1/devices").await;
    assert_eq!(devices[0]["dev_id"], dev_id, "{devices}");
    assert_eq!(devices[0]["datastores"][0]["mapped_items"], 1);
    assert_eq!(
        alice.client.get(&link_url).send().await.unwrap().status(),
        200
    );
}
