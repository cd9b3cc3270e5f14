//! vCard import and export through the API, groups, and duplicate merging
//! with undo, against the real stack.

use onebook_domain::vcard::{self, Property, VCard};
use onebook_testkit::{repo_root, Stack, TestUser};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn fixture(name: &str) -> String {
    let path = repo_root().join("domain/tests/data/vcards").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a property says, independent of line folding, escaping and the
/// order of its parameters.
fn meaning(p: &Property) -> String {
    let mut types: Vec<String> = p.types().map(|t| t.to_ascii_uppercase()).collect();
    types.sort();
    let value = if p.is_binary() {
        p.value.split_whitespace().collect()
    } else {
        p.text()
    };
    format!(
        "{}.{} [{}] = {}",
        p.group.as_deref().unwrap_or("").to_lowercase(),
        p.name,
        types.join(","),
        value
    )
}

fn meanings(card: &VCard) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in card
        .properties
        .iter()
        .filter(|p| !matches!(p.name.as_str(), "PRODID" | "REV"))
    {
        *out.entry(meaning(p)).or_default() += 1;
    }
    out
}

fn fn_of(card: &VCard) -> String {
    card.get("FN").map(|p| p.text()).unwrap_or_default()
}

async fn import(user: &TestUser, stack: &Stack, body: String) -> reqwest::Response {
    user.client
        .post(format!("{}/api/v1/contacts/import", stack.edge_https))
        .header("content-type", "text/vcard")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// An upload over the limit gets its 413 every time, also over HTTP/2
/// through the edge, where answering before the body was read used to
/// reach some clients as a stream reset instead.
#[tokio::test]
async fn oversized_uploads_always_get_a_413() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "oversized").await;
    let body = bytes::Bytes::from("X".repeat(5 * 1024 * 1024));
    let mut uploads = Vec::new();
    for _ in 0..24 {
        let (client, body) = (user.client.clone(), body.clone());
        let url = format!("{}/api/v1/contacts/import", stack.edge_https);
        uploads.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "text/vcard")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            Ok::<_, String>((response.version(), response.status()))
        }));
    }
    for upload in uploads {
        let (version, status) = upload.await.unwrap().expect("a response, not a reset");
        assert_eq!(version, reqwest::Version::HTTP_2);
        assert_eq!(status, 413);
    }
}

/// The webapp reads an oversized body to its end before answering 413, so
/// the connection stays usable: answering early closes it with unread data,
/// which a proxy in front may turn into a reset for its client.
#[tokio::test]
async fn an_oversized_upload_is_read_to_its_end_before_the_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "drained").await;
    let mut stream = tokio::net::TcpStream::connect("127.0.0.1:8101")
        .await
        .unwrap();
    let body = vec![b'X'; 5 * 1024 * 1024];
    let head = format!(
        "POST /api/v1/contacts/import HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/vcard\r\nContent-Length: {}\r\n\r\n",
        user.token,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&body)
        .await
        .expect("the server took the whole body");
    stream
        .write_all(
            b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut replies = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut replies),
    )
    .await
    .expect("the server closes after the second reply")
    .expect("no reset");
    let replies = String::from_utf8_lossy(&replies);
    assert!(
        replies.starts_with("HTTP/1.1 413"),
        "{}",
        &replies[..replies.len().min(200)]
    );
    // The first reply is the 413, so a 200 can only answer the second request.
    assert!(
        replies.contains("HTTP/1.1 200"),
        "the same connection did not answer the next request: {}",
        &replies[..replies.len().min(400)]
    );
}

#[tokio::test]
async fn import_then_export_keeps_every_property_of_every_card() {
    let stack = Stack::get();
    let groups = [
        (
            "2.1",
            [
                "bob-21-plain.vcf",
                "jose-garcia-21.vcf",
                "li-wei-21-photo.vcf",
            ]
            .as_slice(),
        ),
        (
            "3.0",
            ["anna-mueller-30.vcf", "olga-30-minimal.vcf"].as_slice(),
        ),
    ];
    for (version, files) in groups {
        let user = TestUser::sign_up(stack, &format!("vcf{}", version.replace('.', ""))).await;
        let originals: Vec<VCard> = files
            .iter()
            .map(|f| {
                vcard::parse(&fixture(f))
                    .remove(0)
                    .unwrap_or_else(|e| panic!("{f}: {e}"))
            })
            .collect();
        let upload: String = files
            .iter()
            .map(|f| fixture(f))
            .collect::<Vec<_>>()
            .join("\r\n");
        let response = import(&user, stack, upload).await;
        assert_eq!(response.status(), 200);
        let report: Value = response.json().await.unwrap();
        assert_eq!(report["imported"], files.len(), "{report}");
        assert_eq!(report["errors"], json!([]));

        let exported = user
            .client
            .get(format!(
                "{}/api/v1/contacts/export.vcf?version={version}",
                stack.edge_https
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(exported.status(), 200);
        assert!(exported.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment"));
        let text = exported.text().await.unwrap();
        let back: Vec<VCard> = vcard::parse(&text)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(back.len(), originals.len());
        for original in &originals {
            let name = fn_of(original);
            let again = back
                .iter()
                .find(|c| fn_of(c) == name)
                .unwrap_or_else(|| panic!("{name} missing from the export"));
            let (before, after) = (meanings(original), meanings(again));
            let lost: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
            assert!(
                lost.is_empty(),
                "{name} (vCard {version}) lost {lost:#?}\nexport:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn a_bad_card_is_reported_by_index_and_the_good_ones_are_kept() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "badcard").await;
    let upload = format!(
        "{}\r\nBEGIN:VCARD\r\nVERSION:3.0\r\nthis line has no colon\r\nEND:VCARD\r\n{}",
        fixture("olga-30-minimal.vcf"),
        fixture("bob-21-plain.vcf")
    );
    let response = import(&user, stack, upload).await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["imported"], 2, "{report}");
    assert_eq!(report["errors"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["errors"][0]["index"], 1);
    let wrong_type = user
        .client
        .post(format!("{}/api/v1/contacts/import", stack.edge_https))
        .header("content-type", "image/png")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    let too_big = import(&user, stack, "X".repeat(5 * 1024 * 1024)).await;
    assert_eq!(too_big.status(), 413);
}

#[tokio::test]
async fn groups_filter_listing_and_export() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "groups").await;
    for (name, cats) in [
        ("Ann", json!(["Family", "Friends"])),
        ("Ben", json!(["Friends"])),
        ("Cid", json!([])),
    ] {
        user.create_contact(stack, &json!({"formatted_name": name, "categories": cats}))
            .await;
    }
    let groups: Value = user.get_json(stack, "/api/v1/groups").await;
    assert_eq!(
        groups,
        json!([{"name": "Family", "count": 1}, {"name": "Friends", "count": 2}])
    );
    let friends: Value = user.get_json(stack, "/api/v1/contacts?group=Friends").await;
    assert_eq!(friends["total"], 2);
    let export = user
        .client
        .get(format!(
            "{}/api/v1/contacts/export.vcf?group=Family&version=4.0",
            stack.edge_https
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cards: Vec<VCard> = vcard::parse(&export)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(cards.len(), 1);
    assert_eq!(fn_of(&cards[0]), "Ann");
}

#[tokio::test]
async fn duplicates_are_found_merged_and_the_merge_undone() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "dupes").await;
    let mut ids = Vec::new();
    for body in [
        json!({"formatted_name": "Ada Lovelace", "emails": [{"value": "ada@engines.test"}]}),
        json!({"formatted_name": "A. Lovelace", "emails": [{"value": "ADA@engines.test"}], "organization": "Analytical Engines", "phones": [{"value": "+44 20 7946 0018"}]}),
        json!({"formatted_name": "Charles Babbage"}),
    ] {
        let created: Value = user
            .client
            .post(format!("{}/api/v1/contacts", stack.edge_https))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    let pairs: Value = user.get_json(stack, "/api/v1/duplicates").await;
    let pairs = pairs.as_array().unwrap();
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    assert_eq!(pairs[0]["reasons"], json!(["same email: ada@engines.test"]));

    let response = user
        .client
        .post(format!("{}/api/v1/duplicates/merge", stack.edge_https))
        .json(&json!({"keep": ids[0], "merge": [ids[1]]}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let merged: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{merged}");
    assert_eq!(merged["contact"]["formatted_name"], "Ada Lovelace");
    assert_eq!(merged["contact"]["organization"], "Analytical Engines");
    assert_eq!(merged["contact"]["phones"].as_array().unwrap().len(), 1);
    let after: Value = user.get_json(stack, "/api/v1/contacts").await;
    assert_eq!(after["total"], 2);
    let gone = user
        .client
        .get(format!("{}/api/v1/contacts/{}", stack.edge_https, ids[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);

    let undo = user
        .client
        .post(format!(
            "{}/api/v1/merges/{}/undo",
            stack.edge_https,
            merged["merge_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(undo.status(), 200);
    let restored: Value = user.get_json(stack, "/api/v1/contacts").await;
    assert_eq!(restored["total"], 3);
    let ada: Value = user
        .get_json(stack, &format!("/api/v1/contacts/{}", ids[0]))
        .await;
    assert!(
        ada.get("organization").is_none(),
        "undo restores the kept card: {ada}"
    );
    let again = user
        .client
        .post(format!(
            "{}/api/v1/merges/{}/undo",
            stack.edge_https,
            merged["merge_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}
