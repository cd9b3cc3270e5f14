//! The OpenAPI document describes the API that really runs: every
//! documented operation is routed (no 405, no router fallback). The other
//! direction (every route documented) is kept by review: the document sits
//! next to `api::routes()`.

use onebook_testkit::{Stack, TestUser};
use serde_json::Value;

#[tokio::test]
async fn every_documented_operation_exists_and_the_document_is_served() {
    let stack = Stack::get();
    let user = TestUser::sign_up(stack, "openapi").await;
    let doc: Value = user.get_json(stack, "/api/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10);
    let mut checked = 0;
    for (path, operations) in paths {
        // A random id: routed handlers answer 404 with a JSON error body,
        // the router's own fallback with an empty body.
        let concrete = path.replace("{id}", "0190b9c4-0000-7000-8000-000000000000");
        let url = format!("{}/api/v1{concrete}", stack.edge_https);
        for method in operations.as_object().unwrap().keys() {
            if path == "/session" && method == "delete" {
                continue; // would log this test's client out
            }
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = user
                .client
                .request(method.clone(), &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(
                !(status == 404 && body.is_empty()),
                "{method} {path} fell through to the router's 404"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} operations checked");

    // And an undocumented path is not routed.
    let missing = user
        .client
        .get(format!("{}/api/v1/nope", stack.edge_https))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
