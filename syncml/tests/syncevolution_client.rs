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
    let page: Value = user.get_json(stack, "/api/v1/contacts?limit=100").await;
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
    user.create_contact(
        stack,
        &serde_json::json!({"formatted_name": "Grace Hopper", "emails": [{"value": "grace@navy.example"}]}),
    )
    .await;
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
    two_way.assert_source_stat("mode", "two-way");
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
        quiet.assert_source_stat(&format!("stat-{key}-total"), "0");
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
    slow.assert_source_stat("stat-local-added-total", "60");
    assert_eq!(std::fs::read_dir(&se.data).unwrap().count(), 60);
    let quiet = se.sync("two-way");
    assert_eq!(quiet.exit, 0, "{}", quiet.output);
    assert_eq!(quiet.source_stat("mode"), "two-way");
    assert_eq!(quiet.source_stat("stat-local-added-total"), "0");
    let _ = std::fs::remove_dir_all(&root);
}

/// `FN` of every card on the device.
fn device_names(se: &SyncEvolution) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&se.data)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .filter_map(|bytes| {
            let card = onebook_domain::vcard::parse_bytes(&bytes)
                .into_iter()
                .next()?
                .ok()?;
            Some(onebook_domain::vcard::from_vcard(&card, "test").formatted_name)
        })
        .collect();
    names.sort();
    names
}

async fn web_create(stack: &Stack, user: &TestUser, name: &str) {
    user.create_contact(stack, &serde_json::json!({"formatted_name": name}))
        .await;
}

fn edit_file(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// All six sync types, one after the other on the same device, each
/// checked on both sides.
async fn six_sync_types(wbxml: bool) {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "se-modes").await;
    let root = std::env::temp_dir().join(format!("onebook-se-{}", uuid::Uuid::new_v4().simple()));
    let se = SyncEvolution::new(&root);
    for entry in std::fs::read_dir(common::data_dir().join("vcards")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, se.data.join(path.file_name().unwrap())).unwrap();
    }
    let url = format!("{}/sync", stack.edge_https);
    se.configure(&Settings {
        url: &url,
        user: &user.email,
        password: PASSWORD,
        ca_file: &stack.ca_file,
        wbxml,
        auth: "md5",
        uri: "contacts",
        max_msg_size: 150_000,
    });
    let check = |o: &syncevolution::Outcome, mode: &str| {
        assert_eq!(o.exit, 0, "{mode}: {}", o.output);
        assert_eq!(o.stat("status"), "200", "{mode}: {}", o.output);
        assert_eq!(o.source_stat("mode"), mode, "{}", o.output);
    };

    let slow = se.sync("slow");
    check(&slow, "slow");
    assert_eq!(slow.source_stat("stat-remote-added-total"), "5");
    assert_eq!(contact_names(stack, &user).await, device_names(&se));

    // One way from the client: the device's edit goes up, the web's new
    // contact does not come down.
    web_create(stack, &user, "Web One").await;
    edit_file(
        &se.data.join("olga-30-minimal.vcf"),
        "FN:Ольга Петрова",
        "FN:Ольга Петрова-Иванова",
    );
    let o = se.sync("one-way-from-client");
    // SyncEvolution reports the type from its own side.
    check(&o, "one-way-from-local");
    o.assert_source_stat("stat-remote-updated-total", "1");
    o.assert_source_stat("stat-local-added-total", "0");
    let server = contact_names(stack, &user).await;
    assert!(
        server.contains(&"Ольга Петрова-Иванова".to_owned()),
        "{server:?}"
    );
    assert!(!device_names(&se).contains(&"Web One".to_owned()));

    // One way from the server: now it comes down; a device edit stays put.
    edit_file(
        &se.data.join("jose-garcia-21.vcf"),
        "NOTE",
        "X-LOCAL-ONLY:yes\r\nNOTE",
    );
    let o = se.sync("one-way-from-server");
    // SyncEvolution reports the type from its own side.
    check(&o, "one-way-from-remote");
    o.assert_source_stat("stat-local-added-total", "1");
    o.assert_source_stat("stat-remote-updated-total", "0");
    assert!(device_names(&se).contains(&"Web One".to_owned()));

    // Refresh from the client: the server ends up with exactly the device's
    // cards (Bob deleted on the device goes, Web Two made on the web too).
    std::fs::remove_file(se.data.join("bob-21-plain.vcf")).unwrap();
    web_create(stack, &user, "Web Two").await;
    let o = se.sync("refresh-from-client");
    // SyncEvolution reports the type from its own side.
    check(&o, "refresh-from-local");
    assert_eq!(contact_names(stack, &user).await, device_names(&se));
    assert!(!contact_names(stack, &user)
        .await
        .contains(&"Web Two".to_owned()));

    // Refresh from the server: the device ends up with exactly the
    // server's cards.
    web_create(stack, &user, "Web Three").await;
    std::fs::write(
        se.data.join("local-only.vcf"),
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Local Only\r\nN:Only;Local;;;\r\nEND:VCARD\r\n",
    )
    .unwrap();
    let o = se.sync("refresh-from-server");
    // SyncEvolution reports the type from its own side.
    check(&o, "refresh-from-remote");
    let server = contact_names(stack, &user).await;
    assert_eq!(server.len(), 6, "{server:?}");
    assert_eq!(device_names(&se), server);

    // Two-way afterwards: changes both ways, and both sides agree.
    web_create(stack, &user, "Web Four").await;
    std::fs::write(
        se.data.join("device-four.vcf"),
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Device Four\r\nN:Four;Device;;;\r\nEND:VCARD\r\n",
    )
    .unwrap();
    let o = se.sync("two-way");
    check(&o, "two-way");
    o.assert_source_stat("stat-local-added-total", "1");
    o.assert_source_stat("stat-remote-added-total", "1");
    let server = contact_names(stack, &user).await;
    assert_eq!(server.len(), 8, "{server:?}");
    assert_eq!(device_names(&se), server);

    // And a slow sync pairs everything instead of duplicating.
    let o = se.sync("slow");
    check(&o, "slow");
    assert_eq!(contact_names(stack, &user).await, server);
    assert_eq!(device_names(&se), server);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn syncevolution_six_sync_types_wbxml() {
    six_sync_types(true).await;
}

#[tokio::test]
async fn syncevolution_six_sync_types_xml() {
    six_sync_types(false).await;
}

/// The device and the web edit the same contact between two two-way
/// syncs: a phone added on the device and an email added on the web both
/// survive, and for the note both changed the newer (the device's) wins
/// while the web's is kept; both sides converge.
#[tokio::test]
async fn syncevolution_conflicting_edits_merge() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "se-conflict").await;
    let root = std::env::temp_dir().join(format!("onebook-se-{}", uuid::Uuid::new_v4().simple()));
    let se = SyncEvolution::new(&root);
    let olga_file = se.data.join("olga-30-minimal.vcf");
    std::fs::copy(
        common::data_dir().join("vcards/olga-30-minimal.vcf"),
        &olga_file,
    )
    .unwrap();
    let url = format!("{}/sync", stack.edge_https);
    se.configure(&Settings {
        url: &url,
        user: &user.email,
        password: PASSWORD,
        ca_file: &stack.ca_file,
        wbxml: true,
        auth: "md5",
        uri: "contacts",
        max_msg_size: 150_000,
    });
    let slow = se.sync("slow");
    assert_eq!(slow.exit, 0, "{}", slow.output);

    let page: Value = user.get_json(stack, "/api/v1/contacts").await;
    let mut olga = page["contacts"][0].clone();
    let contact_path = format!("/api/v1/contacts/{}", olga["id"].as_str().unwrap());
    let contact_url = format!("{}{contact_path}", stack.edge_https);
    let obj = olga.as_object_mut().unwrap();
    for k in ["id", "version", "created_at", "updated_at"] {
        obj.remove(k);
    }
    let mut emails = obj["emails"].as_array().cloned().unwrap_or_default();
    emails.push(serde_json::json!({"value": "olga@web.example"}));
    obj.insert("emails".into(), emails.into());
    obj.insert("note".into(), "note from the web".into());
    let r = user
        .client
        .put(&contact_url)
        .json(&olga)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // The device's edit comes later, so its note is the newer one.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let text = std::fs::read_to_string(&olga_file).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("NOTE") && !l.starts_with("REV"))
        .map(|l| {
            if l == "END:VCARD" {
                "TEL;TYPE=WORK:+7 812 555 00 11\r\nNOTE:note from the phone\r\nEND:VCARD\r\n"
                    .to_owned()
            } else {
                format!("{l}\r\n")
            }
        })
        .collect();
    std::fs::write(&olga_file, text).unwrap();

    let two_way = se.sync("two-way");
    assert_eq!(two_way.exit, 0, "{}", two_way.output);
    assert_eq!(two_way.source_stat("mode"), "two-way");
    assert_eq!(two_way.source_stat("stat-remote-updated-total"), "1");

    let now: Value = user.get_json(stack, &contact_path).await;
    let values = |field: &str| -> Vec<String> {
        now[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["value"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        values("emails").contains(&"olga@web.example".to_owned()),
        "{now}"
    );
    assert!(
        values("phones").iter().any(|p| p.contains("812 555")),
        "{now}"
    );
    assert_eq!(now["note"], "note from the phone", "{now}");
    assert!(
        now["custom_fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["value"] == "note: note from the web"),
        "{now}"
    );
    // The device got the merged card.
    let device = std::fs::read_to_string(&olga_file).unwrap();
    assert!(device.contains("olga@web.example"), "{device}");
    assert!(device.contains("note from the web"), "{device}");
    // Both sides agree: nothing more to exchange.
    let quiet = se.sync("two-way");
    assert_eq!(quiet.exit, 0, "{}", quiet.output);
    quiet.assert_source_stat("stat-remote-updated-total", "0");
    let _ = std::fs::remove_dir_all(&root);
}

/// A client taking at most 10 KB per message, with the 7 KB photo card:
/// the card goes up whole, a second such device gets it back in a
/// package split over several messages, photo intact, and a two-way sync
/// afterwards is quiet.
#[tokio::test]
async fn syncevolution_photo_card_under_a_10k_message_limit() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "se-photo").await;
    let url = format!("{}/sync", stack.edge_https);
    let settings = Settings {
        url: &url,
        user: &user.email,
        password: PASSWORD,
        ca_file: &stack.ca_file,
        wbxml: true,
        auth: "md5",
        uri: "contacts",
        max_msg_size: 10240,
    };
    let root_a = std::env::temp_dir().join(format!("onebook-se-{}", uuid::Uuid::new_v4().simple()));
    let a = SyncEvolution::new(&root_a);
    for entry in std::fs::read_dir(common::data_dir().join("vcards")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, a.data.join(path.file_name().unwrap())).unwrap();
    }
    a.configure(&settings);
    let slow = a.sync("slow");
    assert_eq!(slow.exit, 0, "{}", slow.output);
    assert_eq!(slow.source_stat("stat-remote-added-total"), "5");

    let root_b = std::env::temp_dir().join(format!("onebook-se-{}", uuid::Uuid::new_v4().simple()));
    let b = SyncEvolution::new(&root_b);
    b.configure(&settings);
    let slow = b.sync("slow");
    assert_eq!(slow.exit, 0, "{}", slow.output);
    slow.assert_source_stat("stat-local-added-total", "5");
    let anna = std::fs::read_dir(&b.data)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|c| c.contains("Anna Maria"))
        .expect("Anna on the second device");
    let original =
        std::fs::read_to_string(common::data_dir().join("vcards/anna-mueller-30.vcf")).unwrap();
    let photo = |card: &str| -> String {
        // The base64 of the PHOTO, unfolded, whatever the line layout.
        let unfolded = card.replace("\r\n ", "").replace("\n ", "");
        let line = unfolded
            .lines()
            .find(|l| l.starts_with("PHOTO"))
            .unwrap_or_default()
            .to_owned();
        line.rsplit(':').next().unwrap_or_default().to_owned()
    };
    assert!(photo(&original).len() > 5000);
    assert_eq!(photo(&anna), photo(&original));
    for se in [&a, &b] {
        let quiet = se.sync("two-way");
        assert_eq!(quiet.exit, 0, "{}", quiet.output);
        assert_eq!(quiet.source_stat("stat-local-added-total"), "0");
        assert_eq!(quiet.source_stat("stat-remote-added-total"), "0");
    }
    let _ = std::fs::remove_dir_all(&root_a);
    let _ = std::fs::remove_dir_all(&root_b);
}

/// A card bigger than the client's 10 KB message limit (a 16 KB photo)
/// goes down as a large object in chunks and arrives intact.
#[tokio::test]
async fn syncevolution_receives_a_card_larger_than_its_message_limit() {
    for wbxml in [false, true] {
        card_larger_than_the_message_limit(wbxml).await;
    }
}

async fn card_larger_than_the_message_limit(wbxml: bool) {
    use base64::Engine as _;
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "se-big").await;
    // Incompressible, deterministic bytes.
    let mut x: u32 = 0x1234_5678;
    let bytes: Vec<u8> = (0..16 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let photo = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let response = user
        .client
        .post(format!("{}/api/v1/contacts", stack.edge_https))
        .json(&serde_json::json!({
            "formatted_name": "Big Picture",
            "photo": {"media_type": "image/png", "data": photo},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let root = std::env::temp_dir().join(format!("onebook-se-{}", uuid::Uuid::new_v4().simple()));
    let se = SyncEvolution::new(&root);
    let url = format!("{}/sync", stack.edge_https);
    se.configure(&Settings {
        url: &url,
        user: &user.email,
        password: PASSWORD,
        ca_file: &stack.ca_file,
        wbxml,
        auth: "md5",
        uri: "contacts",
        max_msg_size: 10240,
    });
    let slow = se.sync("slow");
    assert_eq!(slow.exit, 0, "{}", slow.output);
    slow.assert_source_stat("stat-local-added-total", "1");
    let card = std::fs::read_dir(&se.data)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .next()
        .unwrap();
    let unfolded = card.replace("\r\n ", "").replace("\n ", "");
    let line = unfolded
        .lines()
        .find(|l| l.starts_with("PHOTO"))
        .unwrap_or_default();
    assert_eq!(line.rsplit(':').next().unwrap_or_default(), photo);
    let quiet = se.sync("two-way");
    assert_eq!(quiet.exit, 0, "{}", quiet.output);
    assert_eq!(quiet.source_stat("stat-local-added-total"), "0");
    let _ = std::fs::remove_dir_all(&root);
}
