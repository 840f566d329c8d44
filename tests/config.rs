//! The config center (`/nacos/v1/cs`, `/nacos/v1/console/namespaces`) against the real binary:
//! statuses, bodies and headers as Nacos 1.4.6 answers them, long polls, beta and tag copies,
//! history, namespaces, import and export, and durability across kill -9. Its bad-input cases
//! are in `tests/bad_input.rs`.

mod common;

use std::time::Duration;

use common::cs::{export, form, get, import, md5_hex, publish, send, send_for, zip_of, CS};
use common::Server;

#[test]
fn publish_get_delete_with_nacos_headers_and_tenant_rules() {
    let s = Server::start(&["--shards", "2"]);
    let content = "a: 1\nb=&+%é 中文\n";
    let r = publish(
        &s,
        &[
            ("dataId", "app.yaml"),
            ("group", "DEFAULT_GROUP"),
            ("content", content),
            ("type", "yaml"),
        ],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    // The public namespace answers to tenant absent, blank, "public" and "null".
    for tenant in [None, Some(""), Some("public"), Some("null")] {
        let mut q = vec![("dataId", "app.yaml"), ("group", "DEFAULT_GROUP")];
        if let Some(t) = tenant {
            q.push(("tenant", t));
        }
        let r = get(&s, &q);
        assert_eq!(r.status, 200, "tenant {tenant:?}");
        assert_eq!(r.body, content);
        assert_eq!(r.header("content-md5"), Some(md5_hex(content).as_str()));
        assert_eq!(r.header("config-type"), Some("yaml"));
        assert_eq!(r.header("content-type"), Some("text/plain;charset=UTF-8"));
        assert_eq!(r.header("cache-control"), Some("no-cache,no-store"));
        assert_eq!(r.header("pragma"), Some("no-cache"));
        assert!(r
            .header("last-modified")
            .is_some_and(|v| v.ends_with(" GMT")));
    }
    // Content type by type; a type Nacos does not know is text.
    publish(
        &s,
        &[
            ("dataId", "j"),
            ("group", "G"),
            ("content", "{}"),
            ("type", "json"),
        ],
    );
    let r = get(&s, &[("dataId", "j"), ("group", "G")]);
    assert_eq!(
        r.header("content-type"),
        Some("application/json;charset=UTF-8")
    );
    publish(
        &s,
        &[
            ("dataId", "t"),
            ("group", "G"),
            ("content", "x"),
            ("type", "toml"),
        ],
    );
    assert_eq!(
        get(&s, &[("dataId", "t"), ("group", "G")]).header("config-type"),
        Some("text")
    );
    // Namespaces are isolated; publish does not normalise the tenant.
    publish(
        &s,
        &[
            ("dataId", "app.yaml"),
            ("group", "DEFAULT_GROUP"),
            ("content", "dev"),
            ("tenant", "dev"),
        ],
    );
    let dev = get(
        &s,
        &[
            ("dataId", "app.yaml"),
            ("group", "DEFAULT_GROUP"),
            ("tenant", "dev"),
        ],
    );
    assert_eq!(dev.body, "dev");
    assert_eq!(
        get(&s, &[("dataId", "app.yaml"), ("group", "DEFAULT_GROUP")]).body,
        content
    );
    // Missing: 404 with Nacos's body.
    let r = get(&s, &[("dataId", "nope"), ("group", "DEFAULT_GROUP")]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "config data not exist\n")
    );
    // Delete, then it is gone; deleting again is still `true`.
    for _ in 0..2 {
        let r = send(
            &s,
            "DELETE",
            &format!(
                "{CS}?{}",
                form(&[("dataId", "app.yaml"), ("group", "DEFAULT_GROUP")])
            ),
            &[],
            "",
        );
        assert_eq!((r.status, r.body.as_str()), (200, "true"));
    }
    assert_eq!(
        get(&s, &[("dataId", "app.yaml"), ("group", "DEFAULT_GROUP")]).status,
        404
    );
    assert_eq!(
        get(
            &s,
            &[
                ("dataId", "app.yaml"),
                ("group", "DEFAULT_GROUP"),
                ("tenant", "dev")
            ]
        )
        .body,
        "dev",
        "deleting in public leaves dev's config"
    );
}

#[test]
fn the_content_limit_is_configurable_and_exact() {
    let s = Server::start(&["--shards", "1", "--config-max-content", "1000"]);
    let ok = publish(
        &s,
        &[
            ("dataId", "a"),
            ("group", "G"),
            ("content", &"é".repeat(1000)),
        ],
    );
    assert_eq!(
        ok.status, 200,
        "1000 characters of 2 bytes each are 1000 UTF-16 units"
    );
    let over = publish(
        &s,
        &[
            ("dataId", "a"),
            ("group", "G"),
            ("content", &"x".repeat(1001)),
        ],
    );
    assert_eq!(
        (over.status, over.body.as_str()),
        (400, "caused: invalid content, over 1000;")
    );
    assert_eq!(
        get(&s, &[("dataId", "a"), ("group", "G")]).body,
        "é".repeat(1000)
    );
}

#[test]
fn the_namespace_config_cap_refuses_new_configs_only() {
    let s = Server::start(&["--shards", "1", "--config-max-per-namespace", "2"]);
    for d in ["a", "b"] {
        assert_eq!(
            publish(&s, &[("dataId", d), ("group", "G"), ("content", "x")]).status,
            200
        );
    }
    let r = publish(&s, &[("dataId", "c"), ("group", "G"), ("content", "x")]);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(get(&s, &[("dataId", "c"), ("group", "G")]).status, 404);
    // Updating an existing config and publishing in another namespace still work.
    assert_eq!(
        publish(&s, &[("dataId", "a"), ("group", "G"), ("content", "y")]).status,
        200
    );
    assert_eq!(
        publish(
            &s,
            &[
                ("dataId", "c"),
                ("group", "G"),
                ("content", "x"),
                ("tenant", "dev")
            ]
        )
        .status,
        200
    );
}

fn listen_body(lines: &[(&str, &str, &str, &str)]) -> String {
    let mut v = String::new();
    for (d, g, m, t) in lines {
        v.push_str(&format!("{d}\x02{g}\x02{m}"));
        if !t.is_empty() {
            v.push_str(&format!("\x02{t}"));
        }
        v.push('\x01');
    }
    form(&[("Listening-Configs", &v)])
}

/// Polls `/metrics` until `muster_config_held_polls` is `n` (bounded: 200 tries).
fn wait_held(s: &Server, n: u64) {
    for _ in 0..200 {
        let (_, m) = s.request("GET", "/metrics", "");
        if m.lines()
            .any(|l| l == format!("muster_config_held_polls {n}"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("muster_config_held_polls never reached {n}");
}

#[test]
fn long_polls_answer_changes_at_once_or_when_woken() {
    let s = Server::start(&["--shards", "2"]);
    publish(&s, &[("dataId", "app"), ("group", "G"), ("content", "v1")]);
    let md5 = md5_hex("v1");
    let path = format!("{CS}/listener");
    let lp = [("Long-Pulling-Timeout", "30000")];
    // A stale md5 is answered at once, URL-encoded, with a newline.
    let r = send(
        &s,
        "POST",
        &path,
        &lp,
        &listen_body(&[("app", "G", "stale", ""), ("other", "G", "", "dev")]),
    );
    assert_eq!((r.status, r.body.as_str()), (200, "app%02G%01\n"));
    assert_eq!(r.header("cache-control"), Some("no-cache,no-store"));
    // Up to date with No-Hangup: an empty 200 at once.
    let r = send(
        &s,
        "POST",
        &path,
        &[
            ("Long-Pulling-Timeout", "30000"),
            ("Long-Pulling-Timeout-No-Hangup", "true"),
        ],
        &listen_body(&[("app", "G", &md5, "")]),
    );
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    // Up to date: held until a publish (through another connection, maybe another shard) wakes
    // it with that key only.
    let addr = s.addr;
    let body = listen_body(&[("app", "G", &md5, ""), ("quiet", "G", "", "")]);
    let held = std::thread::spawn({
        let path = path.clone();
        move || {
            let r = send_for(
                addr,
                "POST",
                &path,
                &[("Long-Pulling-Timeout", "30000")],
                &body,
                Duration::from_secs(40),
            );
            (r.status, r.body)
        }
    });
    wait_held(&s, 1);
    publish(&s, &[("dataId", "app"), ("group", "G"), ("content", "v2")]);
    assert_eq!(held.join().unwrap(), (200, "app%02G%01\n".to_string()));
    wait_held(&s, 0);
    // A publish of the same content (same md5) does not wake a poll; the hold ends with an
    // empty 200 (Long-Pulling-Timeout 10000 → held 10 s).
    let md5 = md5_hex("v2");
    let body = listen_body(&[("app", "G", &md5, "")]);
    let held = std::thread::spawn({
        let path = path.clone();
        move || {
            let r = send_for(
                addr,
                "POST",
                &path,
                &[("Long-Pulling-Timeout", "10000")],
                &body,
                Duration::from_secs(30),
            );
            (r.status, r.body)
        }
    });
    wait_held(&s, 1);
    publish(&s, &[("dataId", "app"), ("group", "G"), ("content", "v2")]);
    assert_eq!(held.join().unwrap(), (200, String::new()));
}

#[test]
fn sigterm_answers_held_polls_at_once() {
    let mut s = Server::start(&["--shards", "2"]);
    let addr = s.addr;
    let held: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let body = listen_body(&[(&format!("k{i}"), "G", "", "")]);
                let r = send_for(
                    addr,
                    "POST",
                    "/nacos/v1/cs/configs/listener",
                    &[("Long-Pulling-Timeout", "30000")],
                    &body,
                    Duration::from_secs(40),
                );
                (r.status, r.body)
            })
        })
        .collect();
    wait_held(&s, 4);
    let st = s.terminate().expect("muster exits after SIGTERM");
    assert!(st.success(), "{st:?}");
    for h in held {
        assert_eq!(h.join().unwrap(), (200, String::new()));
    }
}

#[test]
fn beta_and_tag_copies_are_selected_per_client() {
    let s = Server::start(&["--shards", "1"]);
    publish(
        &s,
        &[("dataId", "d"), ("group", "G"), ("content", "normal")],
    );
    // A beta for this client (127.0.0.1) and another address.
    let r = send(
        &s,
        "POST",
        CS,
        &[("betaIps", "10.9.9.9,127.0.0.1")],
        &form(&[("dataId", "d"), ("group", "G"), ("content", "beta")]),
    );
    assert_eq!(r.body, "true");
    let r = get(&s, &[("dataId", "d"), ("group", "G")]);
    assert_eq!(
        (r.body.as_str(), r.header("isbeta")),
        ("beta", Some("true"))
    );
    let r = get(&s, &[("dataId", "d"), ("group", "G"), ("beta", "true")]);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["code"], 200);
    assert_eq!(v["data"]["content"], "beta");
    assert_eq!(v["data"]["betaIps"], "10.9.9.9,127.0.0.1");
    let r = send(
        &s,
        "DELETE",
        &format!("{CS}?dataId=d&group=G&beta=true"),
        &[],
        "",
    );
    assert_eq!(
        r.body,
        r#"{"code":200,"message":"stop beta ok","data":true}"#
    );
    let r = get(&s, &[("dataId", "d"), ("group", "G")]);
    assert_eq!((r.body.as_str(), r.header("isbeta")), ("normal", None));
    // A tag copy: by `tag`, or by the Vipserver-Tag header.
    publish(
        &s,
        &[
            ("dataId", "d"),
            ("group", "G"),
            ("content", "gray"),
            ("tag", "gray"),
        ],
    );
    assert_eq!(
        get(&s, &[("dataId", "d"), ("group", "G"), ("tag", "gray")]).body,
        "gray"
    );
    let r = send(
        &s,
        "GET",
        &format!("{CS}?dataId=d&group=G"),
        &[("Vipserver-Tag", "gray")],
        "",
    );
    assert_eq!(r.body, "gray");
    assert_eq!(get(&s, &[("dataId", "d"), ("group", "G")]).body, "normal");
    assert_eq!(
        get(&s, &[("dataId", "d"), ("group", "G"), ("tag", "blue")]).status,
        404
    );
    send(
        &s,
        "DELETE",
        &format!("{CS}?dataId=d&group=G&tag=gray"),
        &[],
        "",
    );
    assert_eq!(
        get(&s, &[("dataId", "d"), ("group", "G"), ("tag", "gray")]).status,
        404
    );
    assert_eq!(get(&s, &[("dataId", "d"), ("group", "G")]).body, "normal");
}

#[test]
fn search_pages_accurate_and_blur() {
    let s = Server::start(&["--shards", "1"]);
    for i in 0..5 {
        publish(
            &s,
            &[
                ("dataId", &format!("svc-{i}.yaml")),
                ("group", "G"),
                ("content", "x"),
                ("appName", if i % 2 == 0 { "even" } else { "odd" }),
            ],
        );
    }
    publish(&s, &[("dataId", "other"), ("group", "H"), ("content", "x")]);
    let page = |q: &str| -> serde_json::Value {
        serde_json::from_str(&send(&s, "GET", &format!("{CS}?{q}"), &[], "").body).unwrap()
    };
    let v = page("search=blur&dataId=svc-*&group=&pageNo=2&pageSize=2");
    assert_eq!(
        (
            v["totalCount"].as_u64(),
            v["pageNumber"].as_u64(),
            v["pagesAvailable"].as_u64()
        ),
        (Some(5), Some(2), Some(3))
    );
    let ids: Vec<&str> = v["pageItems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["dataId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["svc-2.yaml", "svc-3.yaml"]);
    let v = page("search=accurate&dataId=other&group=H&pageNo=1&pageSize=10");
    assert_eq!(v["totalCount"], 1);
    assert_eq!(v["pageItems"][0]["content"], "x");
    let v = page("search=accurate&dataId=&group=G&appName=even&pageNo=1&pageSize=10");
    assert_eq!(v["totalCount"], 3);
    assert_eq!(
        page("search=accurate&dataId=svc-*&group=&pageNo=1&pageSize=10")["totalCount"],
        0,
        "accurate takes * literally"
    );
}

#[test]
fn history_pages_records_and_previous() {
    let s = Server::start(&["--shards", "1", "--config-history-max", "3"]);
    for v in ["v1", "v2", "v3", "v4"] {
        publish(&s, &[("dataId", "h"), ("group", "G"), ("content", v)]);
    }
    send(&s, "DELETE", &format!("{CS}?dataId=h&group=G"), &[], "");
    let list: serde_json::Value = serde_json::from_str(
        &send(
            &s,
            "GET",
            "/nacos/v1/cs/history?search=accurate&dataId=h&group=G&pageNo=1&pageSize=2",
            &[],
            "",
        )
        .body,
    )
    .unwrap();
    assert_eq!(
        (list["totalCount"].as_u64(), list["pagesAvailable"].as_u64()),
        (Some(3), Some(2)),
        "kept 3"
    );
    let items = list["pageItems"].as_array().unwrap();
    assert_eq!(items[0]["opType"], "D");
    assert_eq!(items[1]["opType"], "U");
    let nid = items[0]["id"].as_u64().unwrap();
    let one: serde_json::Value = serde_json::from_str(
        &send(
            &s,
            "GET",
            &format!("/nacos/v1/cs/history?nid={nid}&dataId=h&group=G"),
            &[],
            "",
        )
        .body,
    )
    .unwrap();
    assert_eq!(
        (one["content"].as_str(), one["md5"].as_str()),
        (Some("v4"), Some(md5_hex("v4").as_str()))
    );
    // Previous: the newest record of the config's id.
    publish(&s, &[("dataId", "p"), ("group", "G"), ("content", "a")]);
    publish(&s, &[("dataId", "p"), ("group", "G"), ("content", "b")]);
    let cfg: serde_json::Value = serde_json::from_str(
        &send(
            &s,
            "GET",
            &format!("{CS}?search=accurate&dataId=p&group=G&pageNo=1&pageSize=1"),
            &[],
            "",
        )
        .body,
    )
    .unwrap();
    let id = cfg["pageItems"][0]["id"].as_u64().unwrap();
    let prev: serde_json::Value = serde_json::from_str(
        &send(
            &s,
            "GET",
            &format!("/nacos/v1/cs/history/previous?id={id}&dataId=p&group=G"),
            &[],
            "",
        )
        .body,
    )
    .unwrap();
    assert_eq!(
        (prev["content"].as_str(), prev["opType"].as_str()),
        (Some("a"), Some("U"))
    );
}

#[test]
fn namespaces_crud_in_the_nacos_envelope() {
    let s = Server::start(&["--shards", "1"]);
    let ns = "/nacos/v1/console/namespaces";
    let list = |s: &Server| -> serde_json::Value {
        serde_json::from_str(&send(s, "GET", ns, &[], "").body).unwrap()
    };
    let v = list(&s);
    assert_eq!(
        (v["code"].as_u64(), v["message"].is_null()),
        (Some(200), true)
    );
    assert_eq!(v["data"][0]["namespace"], "");
    assert_eq!(v["data"][0]["namespaceShowName"], "public");
    assert_eq!(v["data"][0]["type"], 0);
    let create = |id: &str| {
        send(
            &s,
            "POST",
            ns,
            &[],
            &form(&[
                ("customNamespaceId", id),
                ("namespaceName", "Dev"),
                ("namespaceDesc", "d"),
            ]),
        )
        .body
    };
    assert_eq!(create("dev"), "true");
    assert_eq!(create("dev"), "false", "taken");
    assert_eq!(create("bad.id"), "false", "bad id");
    assert_eq!(
        send(
            &s,
            "GET",
            &format!("{ns}?checkNamespaceIdExist=true&customNamespaceId=dev"),
            &[],
            ""
        )
        .body,
        "true"
    );
    assert_eq!(
        send(
            &s,
            "GET",
            &format!("{ns}?checkNamespaceIdExist=true&customNamespaceId=nope"),
            &[],
            ""
        )
        .body,
        "false"
    );
    publish(
        &s,
        &[
            ("dataId", "x"),
            ("group", "G"),
            ("content", "x"),
            ("tenant", "dev"),
        ],
    );
    let v = list(&s);
    assert_eq!(v["data"][1]["namespace"], "dev");
    assert_eq!(
        (
            v["data"][1]["configCount"].as_u64(),
            v["data"][1]["type"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(
        send(
            &s,
            "PUT",
            ns,
            &[],
            &form(&[
                ("namespace", "dev"),
                ("namespaceShowName", "Development"),
                ("namespaceDesc", "dd")
            ])
        )
        .body,
        "true"
    );
    let one: serde_json::Value = serde_json::from_str(
        &send(
            &s,
            "GET",
            &format!("{ns}?show=all&namespaceId=dev"),
            &[],
            "",
        )
        .body,
    )
    .unwrap();
    assert_eq!(
        (
            one["namespaceShowName"].as_str(),
            one["namespaceDesc"].as_str()
        ),
        (Some("Development"), Some("dd"))
    );
    assert_eq!(
        send(&s, "DELETE", &format!("{ns}?namespaceId=dev"), &[], "").body,
        "true"
    );
    assert_eq!(
        list(&s)["data"].as_array().unwrap().len(),
        1,
        "public stays, always"
    );
    // A blank id gets a UUID.
    assert_eq!(create(""), "true");
    let v = list(&s);
    assert_eq!(v["data"][1]["namespace"].as_str().unwrap().len(), 36);
}

/// Naming and config share namespace ids: a namespace that holds services is listed even when
/// nobody created it (naming never checks the registry, as in Nacos 1.x), until it is created,
/// which names it, and after it is deleted while services remain.
#[test]
fn namespaces_naming_uses_are_listed() {
    let s = Server::start(&["--shards", "2"]);
    let ns = "/nacos/v1/console/namespaces";
    let list = |s: &Server| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&send(s, "GET", ns, &[], "").body).unwrap();
        v["data"].as_array().unwrap().clone()
    };
    let exists = |s: &Server| {
        send(
            s,
            "GET",
            &format!("{ns}?checkNamespaceIdExist=true&customNamespaceId=svc"),
            &[],
            "",
        )
        .body
    };
    // Naming writes to an id nobody created: accepted, as Nacos does.
    let (st, body) = s.request(
        "POST",
        "/nacos/v1/ns/service?serviceName=a&namespaceId=svc",
        "",
    );
    assert_eq!((st, body.as_str()), (200, "ok"));
    let (st, _) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=b&ip=1.1.1.1&port=1&namespaceId=svc",
        "",
    );
    assert_eq!(st, 200);
    // A service in public adds nothing.
    s.request("POST", "/nacos/v1/ns/service?serviceName=p", "");
    let v = list(&s);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(
        (
            v[1]["namespace"].as_str(),
            v[1]["namespaceShowName"].as_str(),
            v[1]["type"].as_u64(),
            v[1]["configCount"].as_u64()
        ),
        (Some("svc"), Some("svc"), Some(2), Some(0))
    );
    let one: serde_json::Value = serde_json::from_str(
        &send(
            &s,
            "GET",
            &format!("{ns}?show=all&namespaceId=svc"),
            &[],
            "",
        )
        .body,
    )
    .unwrap();
    assert_eq!(one["namespace"], "svc");
    assert_eq!(exists(&s), "false", "implicit: not in the registry");
    // Creating it names it, once.
    let r = send(
        &s,
        "POST",
        ns,
        &[],
        &form(&[("customNamespaceId", "svc"), ("namespaceName", "Services")]),
    );
    assert_eq!(r.body, "true");
    let v = list(&s);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[1]["namespaceShowName"], "Services");
    assert_eq!(exists(&s), "true");
    // Deleting the entry leaves the services, so the namespace stays listed, unnamed.
    assert_eq!(
        send(&s, "DELETE", &format!("{ns}?namespaceId=svc"), &[], "").body,
        "true"
    );
    let v = list(&s);
    assert_eq!(
        (v.len(), v[1]["namespaceShowName"].as_str()),
        (2, Some("svc"))
    );
    let (st, _) = s.request(
        "GET",
        "/nacos/v1/ns/instance/list?serviceName=b&namespaceId=svc",
        "",
    );
    assert_eq!(st, 200);
    // Once its services are gone, so is the entry.
    s.request(
        "DELETE",
        "/nacos/v1/ns/instance?serviceName=b&ip=1.1.1.1&port=1&namespaceId=svc",
        "",
    );
    for svc in ["a", "b"] {
        let (st, body) = s.request(
            "DELETE",
            &format!("/nacos/v1/ns/service?serviceName={svc}&namespaceId=svc"),
            "",
        );
        assert_eq!((st, body.as_str()), (200, "ok"), "{svc}");
    }
    assert_eq!(list(&s).len(), 1);
}

/// Every acknowledged config, its history and the namespaces come back after kill -9, from the
/// log alone and from a snapshot plus the log.
#[test]
fn configs_history_and_namespaces_survive_kill_9() {
    let addr = common::free_loopback_addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--shards", "2", "--snapshot-entries", "7"];
    let s = Server::launch_on(&addr, dir, &args, &[]);
    let mut want = Vec::new();
    for i in 0..12 {
        let content = format!("line {i}\n&+=% é {}", "z".repeat(i * 100));
        let r = publish(
            &s,
            &[
                ("dataId", &format!("cfg{i}")),
                ("group", "G"),
                ("content", &content),
            ],
        );
        assert_eq!(r.body, "true");
        want.push((format!("cfg{i}"), md5_hex(&content)));
    }
    publish(
        &s,
        &[("dataId", "cfg0"), ("group", "G"), ("content", "updated")],
    );
    want[0].1 = md5_hex("updated");
    send(
        &s,
        "POST",
        "/nacos/v1/console/namespaces",
        &[],
        &form(&[("customNamespaceId", "prod"), ("namespaceName", "Prod")]),
    );
    let snaps = std::fs::read_dir(s.data_dir.path().join("raft"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        })
        .count();
    assert!(
        snaps > 0,
        "a snapshot was taken, so recovery reads the config section"
    );
    // And a tail after it, replayed from the log.
    let r = publish(&s, &[("dataId", "tail"), ("group", "G"), ("content", "t")]);
    assert_eq!(r.body, "true");
    want.push(("tail".into(), md5_hex("t")));
    let history_before = send(
        &s,
        "GET",
        "/nacos/v1/cs/history?search=accurate&dataId=cfg0&group=G",
        &[],
        "",
    )
    .body;
    let s = s.kill_and_restart(&args);
    for (d, md5) in &want {
        let r = get(&s, &[("dataId", d), ("group", "G")]);
        assert_eq!(r.status, 200, "{d}");
        assert_eq!(r.header("content-md5"), Some(md5.as_str()), "{d}");
    }
    assert_eq!(
        send(
            &s,
            "GET",
            "/nacos/v1/cs/history?search=accurate&dataId=cfg0&group=G",
            &[],
            ""
        )
        .body,
        history_before
    );
    assert_eq!(
        send(
            &s,
            "GET",
            "/nacos/v1/console/namespaces?checkNamespaceIdExist=true&customNamespaceId=prod",
            &[],
            ""
        )
        .body,
        "true"
    );
    // muster-wal shows the config's events (read-only: the server may keep running).
    let wal = common::muster_wal();
    let out = std::process::Command::new(&wal)
        .args(["history"])
        .arg(s.data_dir.path())
        .args(["--config", "tail", "--group", "G"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("history of tail+G: 1 events"), "{text}");
    assert!(
        text.contains(" publish ") && text.contains(r#""content":"t""#),
        "{text}"
    );
    let out = std::process::Command::new(&wal)
        .arg("dump")
        .arg(s.data_dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("domain=config key=tail+G event=publish"),
        "{text}"
    );
}

#[test]
fn export_import_round_trip_is_byte_identical() {
    let a = Server::start(&["--shards", "2"]);
    publish(
        &a,
        &[
            ("dataId", "app.yaml"),
            ("group", "G"),
            ("content", "a: 1\n中文"),
            ("appName", "shop"),
        ],
    );
    publish(
        &a,
        &[
            ("dataId", "db.properties"),
            ("group", "H"),
            ("content", "url=x&y"),
        ],
    );
    let first = export(&a, "tenant=");
    // Entries `group/dataId` and `.meta.yml` as Nacos writes them.
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(first.clone())).unwrap();
    let mut names: Vec<String> = (0..z.len())
        .map(|i| z.by_index(i).unwrap().name().to_string())
        .collect();
    names.sort();
    assert_eq!(names, [".meta.yml", "G/app.yaml", "H/db.properties"]);
    let mut meta = String::new();
    std::io::Read::read_to_string(&mut z.by_name(".meta.yml").unwrap(), &mut meta).unwrap();
    assert_eq!(meta, "G.app~yaml.app=shop\r\n");
    // Into a fresh server, and out again: the same bytes.
    let b = Server::start(&["--shards", "1"]);
    let (status, v) = import(&b, "namespace=&policy=ABORT", &first);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["succCount"], 2);
    assert_eq!(
        get(&b, &[("dataId", "app.yaml"), ("group", "G")]).body,
        "a: 1\n中文"
    );
    assert_eq!(
        export(&b, "tenant="),
        first,
        "export → import → export is byte-identical"
    );
    // Policies against existing configs.
    let (_, v) = import(&b, "policy=ABORT", &first);
    assert_eq!(
        (
            v["data"]["succCount"].as_u64(),
            v["data"]["failData"].as_array().map(Vec::len)
        ),
        (Some(0), Some(1))
    );
    let (_, v) = import(
        &b,
        "policy=SKIP",
        &zip_of(&[("G/app.yaml", "changed"), ("G/new", "n")]),
    );
    assert_eq!(
        (
            v["data"]["succCount"].as_u64(),
            v["data"]["skipCount"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        get(&b, &[("dataId", "app.yaml"), ("group", "G")]).body,
        "a: 1\n中文"
    );
    let (_, v) = import(
        &b,
        "policy=OVERWRITE",
        &zip_of(&[("G/app.yaml", "changed")]),
    );
    assert_eq!(v["data"]["succCount"], 1);
    assert_eq!(
        get(&b, &[("dataId", "app.yaml"), ("group", "G")]).body,
        "changed"
    );
}

/// ENOSPC refuses the publish with a clear 500 and changes nothing; publishing resumes when
/// space returns, and a restart shows exactly the acknowledged configs.
#[test]
fn a_full_disk_refuses_publishes_cleanly_and_they_resume() {
    let fs = common::Tmpfs::mount("768k");
    let args = [
        "--shards",
        "2",
        "--wal-segment-bytes",
        "131072",
        "--snapshot-entries",
        "1000000",
    ];
    let data = tempfile::TempDir::new_in(&fs.0).unwrap();
    let s = Server::launch(data, &args, &[]);
    let filler = "x".repeat(2000);
    let mut acked = Vec::new();
    let mut failure = None;
    for i in 0..2000 {
        let d = format!("c{i}");
        let r = publish(&s, &[("dataId", &d), ("group", "G"), ("content", &filler)]);
        if r.status == 200 {
            acked.push(d);
        } else {
            failure = Some((d, r));
            break;
        }
    }
    let (refused, r) = failure.expect("the disk never filled up");
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body
            .starts_with("caused: the write was not persisted (no space left): "),
        "a clear error that says the disk is full: {}",
        r.body
    );
    assert_eq!(
        get(&s, &[("dataId", &refused), ("group", "G")]).status,
        404,
        "nothing changed"
    );
    fs.resize("16m");
    let mut resumed = false;
    for _ in 0..50 {
        if publish(&s, &[("dataId", "after"), ("group", "G"), ("content", "x")]).status == 200 {
            resumed = true;
            acked.push("after".into());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(resumed, "publishing did not resume after space returned");
    let s = s.kill_and_restart(&args);
    for d in &acked {
        assert_eq!(
            get(&s, &[("dataId", d), ("group", "G")]).status,
            200,
            "{d} acknowledged, then lost"
        );
    }
    assert_eq!(
        get(&s, &[("dataId", &refused), ("group", "G")]).status,
        404,
        "the refused publish appeared after a restart"
    );
}

#[test]
fn export_v2_carries_type_app_and_desc_and_round_trips() {
    let a = Server::start(&["--shards", "1"]);
    publish(
        &a,
        &[
            ("dataId", "app"),
            ("group", "G"),
            ("content", "{}"),
            ("type", "json"),
            ("appName", "shop"),
            ("desc", "it's"),
        ],
    );
    publish(&a, &[("dataId", "123"), ("group", "H"), ("content", "x")]);
    let first = export(&a, "exportV2=true&tenant=");
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(first.clone())).unwrap();
    let mut meta = String::new();
    std::io::Read::read_to_string(&mut z.by_name(".metadata.yml").unwrap(), &mut meta).unwrap();
    assert_eq!(
        meta,
        "metadata:\n- appName: shop\n  dataId: app\n  desc: it's\n  group: G\n  type: json\n\
         - dataId: '123'\n  group: H\n  type: text\n"
    );
    let b = Server::start(&["--shards", "1"]);
    let (status, v) = import(&b, "policy=ABORT", &first);
    assert_eq!(
        (status, v["data"]["succCount"].as_u64()),
        (200, Some(2)),
        "{v}"
    );
    let r = get(&b, &[("dataId", "app"), ("group", "G")]);
    assert_eq!(
        (r.body.as_str(), r.header("config-type")),
        ("{}", Some("json"))
    );
    assert_eq!(
        export(&b, "exportV2=true&tenant="),
        first,
        "byte-identical round trip"
    );
    // An entry the metadata does not list is unrecognised, not imported.
    let c = Server::start(&["--shards", "1"]);
    let odd = zip_of(&[
        ("G/app", "{}"),
        ("G/extra", "x"),
        (
            ".metadata.yml",
            "metadata:\n- dataId: app\n  group: G\n  type: json\n",
        ),
    ]);
    let (_, v) = import(&c, "", &odd);
    assert_eq!(v["data"]["succCount"], 1, "{v}");
    assert_eq!(v["data"]["unrecognizedData"][0]["itemName"], "G/extra");
    assert_eq!(get(&c, &[("dataId", "extra"), ("group", "G")]).status, 404);
}
