//! Accounts against the real stack: API tokens, password changes, login
//! throttling and CSRF protection of the web forms.

use onebook_testkit::{unique_email, Stack, TestUser};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn api_tokens_authenticate_scripts_until_revoked() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "tokens").await;
    let created: Value = user
        .post_json(stack, "/api/v1/tokens", &json!({"name": "backup script"}))
        .await;
    let secret = created["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("obk_"));
    // A client without cookies, only the token.
    let script = Stack::get().client();
    let me = script
        .get(format!("{}/api/v1/me", stack.edge_https))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["email"], user.email);
    let listed: Value = user.get_json(stack, "/api/v1/tokens").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(
        listed[0].get("token").is_none(),
        "the secret is shown only once"
    );

    let revoke = user
        .client
        .delete(format!(
            "{}/api/v1/tokens/{}",
            stack.edge_https,
            created["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    let after = script
        .get(format!("{}/api/v1/me", stack.edge_https))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    let forged = script
        .get(format!("{}/api/v1/me", stack.edge_https))
        .bearer_auth(format!("obk_{}_0000", user.id.replace('-', "")))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
}

#[tokio::test]
async fn changing_the_password_ends_other_sessions() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "password").await;
    // A second session, as from another device.
    let other = Stack::get().client();
    let login = other
        .post(format!("{}/api/v1/session", stack.edge_https))
        .json(&json!({"email": user.email, "password": "test-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);

    let wrong = user
        .client
        .put(format!("{}/api/v1/account/password", stack.edge_https))
        .json(&json!({"current_password": "not-it-at-all", "new_password": "brand-new-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["field"],
        "current_password"
    );

    let changed = user
        .client
        .put(format!("{}/api/v1/account/password", stack.edge_https))
        .json(&json!({"current_password": "test-password-1", "new_password": "brand-new-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 204);
    assert_eq!(
        user.client
            .get(format!("{}/api/v1/me", stack.edge_https))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        other
            .get(format!("{}/api/v1/me", stack.edge_https))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let new_login = Stack::get()
        .client()
        .post(format!("{}/api/v1/session", stack.edge_https))
        .json(&json!({"email": user.email, "password": "brand-new-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(new_login.status(), 200);
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled() {
    let stack = Stack::get();
    let client = stack.client();
    let email = unique_email("throttle");
    let signup = client
        .post(format!("{}/api/v1/accounts", stack.edge_https))
        .json(&json!({"email": email, "password": "right-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    for attempt in 0..10 {
        let response = client
            .post(format!("{}/api/v1/session", stack.edge_https))
            .json(&json!({"email": email, "password": format!("wrong-{attempt}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    // Now even the right password waits: that is what stops guessing.
    let blocked = client
        .post(format!("{}/api/v1/session", stack.edge_https))
        .json(&json!({"email": email, "password": "right-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: i64 = blocked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= 15 * 60, "{wait}");
}

#[tokio::test]
async fn web_forms_refuse_posts_without_the_csrf_token() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "csrf").await;
    let forged = user
        .client
        .post(format!("{}/contacts/new", stack.edge_https))
        .form(&[("name", "Injected"), ("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let page = user
        .client
        .get(format!("{}/", stack.edge_https))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("no csrf field on the page") + marker.len();
    let token = &page[start..start + 64];
    let real = user
        .client
        .post(format!("{}/contacts/new", stack.edge_https))
        .form(&[("name", "Typed in the browser"), ("csrf", token)])
        .send()
        .await
        .unwrap();
    assert!(real.status().is_success(), "{}", real.status());
    let listed: Value = user.get_json(stack, "/api/v1/contacts").await;
    assert_eq!(listed["total"], 1);
    assert_eq!(
        listed["contacts"][0]["formatted_name"],
        "Typed in the browser"
    );
}
