//! Every endpoint of the naming API against the real binary: success bodies and error bodies.

mod common;

use common::Server;
use serde_json::Value;

const JAVA: (&str, &str) = ("User-Agent", "Nacos-Java-Client:v1.4.6");

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn start() -> Server {
    Server::start(&["--shards", "2"])
}

#[test]
fn instance_register_list_detail_deregister() {
    let s = start();
    let (st, b) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=orders&ip=10.0.0.5&port=8080&metadata=%7B%22zone%22%3A%22a%22%7D&clusterName=c1",
        "",
    );
    assert_eq!((st, b.as_str()), (200, "ok"));
    // Form body works too (Java's beat and config use it).
    let (st, b) = s.request(
        "POST",
        "/nacos/v1/ns/instance",
        "serviceName=orders&ip=10.0.0.6&port=8080&weight=2",
    );
    assert_eq!((st, b.as_str()), (200, "ok"));

    let (st, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=orders", "");
    assert_eq!(st, 200);
    let v = json(&b);
    assert_eq!(v["name"], "DEFAULT_GROUP@@orders");
    assert_eq!(v["dom"], "orders", "non-Java clients get the bare name");
    assert_eq!(v["cacheMillis"], 3000);
    assert_eq!(v["clusters"], "");
    assert_eq!(v["hosts"].as_array().unwrap().len(), 2);
    let h = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["ip"] == "10.0.0.5")
        .unwrap();
    assert_eq!(h["metadata"]["zone"], "a");
    assert_eq!(h["clusterName"], "c1");
    assert_eq!(h["serviceName"], "orders");
    assert_eq!(h["instanceId"], "10.0.0.5#8080#c1#DEFAULT_GROUP@@orders");
    assert!(v["lastRefTime"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(v["checksum"].as_str().unwrap().len(), 32);

    // Java ≥ 1.0.0 sees grouped names; clusters echo exactly.
    let (_, b) = s.request_with(
        "GET",
        "/nacos/v1/ns/instance/list?serviceName=DEFAULT_GROUP%40%40orders&clusters=c1",
        &[JAVA],
        "",
    );
    let v = json(&b);
    assert_eq!(v["dom"], "DEFAULT_GROUP@@orders");
    assert_eq!(v["clusters"], "c1");
    assert_eq!(v["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(v["hosts"][0]["serviceName"], "DEFAULT_GROUP@@orders");

    // Missing service.
    let (st, b) = s.request(
        "GET",
        "/nacos/v1/ns/instance/list?serviceName=nope&clusters=x",
        "",
    );
    assert_eq!(st, 200);
    assert_eq!(
        json(&b),
        json(r#"{"name":"DEFAULT_GROUP@@nope","clusters":"x","cacheMillis":3000,"hosts":[]}"#)
    );

    // Detail.
    let (st, b) = s.request(
        "GET",
        "/nacos/v1/ns/instance?serviceName=orders&ip=10.0.0.5&port=8080&clusterName=c1",
        "",
    );
    assert_eq!(st, 200);
    let v = json(&b);
    assert_eq!(v["service"], "DEFAULT_GROUP@@orders");
    assert_eq!(v["weight"], 1.0);
    assert_eq!(v["healthy"], true);
    let (st, b) = s.request(
        "GET",
        "/nacos/v1/ns/instance?serviceName=ghost&ip=1.1.1.1&port=1",
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (500, "caused: no service DEFAULT_GROUP@@ghost found!;")
    );
    let (st, b) = s.request(
        "GET",
        "/nacos/v1/ns/instance?serviceName=orders&ip=1.1.1.1&port=1&clusterName=zz",
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (
            500,
            "caused: no ips found for cluster zz in service DEFAULT_GROUP@@orders;"
        )
    );
    let (st, b) = s.request(
        "GET",
        "/nacos/v1/ns/instance?serviceName=orders&ip=1.1.1.1&port=1&clusterName=c1",
        "",
    );
    assert_eq!((st, b.as_str()), (500, "caused: no matched ip found!;"));

    // Deregister (ok even when nothing matches).
    let (st, b) = s.request(
        "DELETE",
        "/nacos/v1/ns/instance?serviceName=orders&ip=10.0.0.5&port=8080&clusterName=c1",
        "",
    );
    assert_eq!((st, b.as_str()), (200, "ok"));
    let (st, b) = s.request(
        "DELETE",
        "/nacos/v1/ns/instance?serviceName=ghost&ip=10.0.0.5&port=8080",
        "",
    );
    assert_eq!((st, b.as_str()), (200, "ok"));
    let (_, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=orders", "");
    assert_eq!(json(&b)["hosts"].as_array().unwrap().len(), 1);
}

#[test]
fn instance_write_errors() {
    let s = start();
    let cases: &[(&str, &str, u16, &str)] = &[
        ("POST", "/nacos/v1/ns/instance?ip=1.1.1.1&port=80", 400, "caused: Param 'serviceName' is required.;"),
        ("POST", "/nacos/v1/ns/instance?serviceName=a&port=80", 400, "caused: Param 'ip' is required.;"),
        ("POST", "/nacos/v1/ns/instance?serviceName=a&ip=1.1.1.1", 400, "caused: Param 'port' is required.;"),
        ("POST", "/nacos/v1/ns/instance?serviceName=a&ip=1.1.1.1&port=x", 400, "caused: For input string: \"x\";"),
        ("POST", "/nacos/v1/ns/instance?serviceName=a&ip=1.1.1.1&port=80&weight=-1", 400, "caused: instance format invalid: The weights range from 0.0 to 10000.0;"),
        ("POST", "/nacos/v1/ns/instance?serviceName=a&ip=1.1.1.1&port=80&weight=abc", 400, "caused: For input string: \"abc\";"),
        ("POST", "/nacos/v1/ns/instance?serviceName=a&ip=1.1.1.1&port=80&metadata=k%3Dv%2Cbad", 400, "caused: metadata format incorrect:k=v,bad;"),
        ("POST", "/nacos/v1/ns/instance?serviceName=%40%40a&ip=1.1.1.1&port=80", 400, "caused: Param 'serviceName' is illegal, groupName can't be empty;"),
        ("POST", "/nacos/v1/ns/instance?serviceName=a&ip=1.1.1.1&port=80&clusterName=c%20d", 400, "caused: Param 'cluster' is illegal, illegal characters should not appear in the param.;"),
        ("POST", "/nacos/v1/ns/instance?serviceName=a&ip=1.1.1.1&port=80&namespaceId=bad%2Fns", 400, "caused: Param 'namespaceId/tenant' is illegal, illegal characters should not appear in the param.;"),
        ("PATCH", "/nacos/v1/ns/instance?serviceName=a&ip=1.1.1.1&port=80", 400, "caused: instance not found;"),
        ("PUT", "/nacos/v1/ns/instance/beat?serviceName=a&beat=%7Bbroken", 400, ""),
    ];
    for (m, p, st, body) in cases {
        let (got_st, got) = s.request(m, p, "");
        assert_eq!(got_st, *st, "{m} {p}: {got}");
        if !body.is_empty() {
            assert_eq!(got, *body, "{m} {p}");
        }
    }
    // Nothing above created anything.
    let (_, b) = s.request(
        "GET",
        "/nacos/v1/ns/service/list?pageNo=1&pageSize=100&groupName=*",
        "",
    );
    assert_eq!(json(&b)["count"], 0, "{b}");
    // Metadata over 1024 bytes.
    let big = "x".repeat(1100);
    let (st, b) = s.request(
        "POST",
        &format!("/nacos/v1/ns/instance?serviceName=a&ip=1.1.1.1&port=80&metadata=k%3D{big}"),
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (
            400,
            "caused: Param 'Metadata' is illegal, the param length should not exceed 1024.;"
        )
    );
}

#[test]
fn update_is_strict_for_java_and_upsert_for_others() {
    let s = start();
    let (st, b) = s.request_with(
        "PUT",
        "/nacos/v1/ns/instance?serviceName=DEFAULT_GROUP%40%40u&ip=1.1.1.1&port=80",
        &[JAVA],
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (
            500,
            "caused: service not found, namespace: public, service: DEFAULT_GROUP@@u;"
        )
    );
    let (st, _) = s.request(
        "PUT",
        "/nacos/v1/ns/instance?serviceName=u&ip=1.1.1.1&port=80&weight=2",
        "",
    );
    assert_eq!(st, 200, "upsert for a non-Java agent");
    let (st, b) = s.request_with(
        "PUT",
        "/nacos/v1/ns/instance?serviceName=DEFAULT_GROUP%40%40u&ip=2.2.2.2&port=80",
        &[JAVA],
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (
            500,
            "caused: instance not exist: 2.2.2.2:80:unknown:DEFAULT_1.0_true_false_DEFAULT;"
        )
    );
    let (st, _) = s.request_with("PUT", "/nacos/v1/ns/instance?serviceName=DEFAULT_GROUP%40%40u&ip=1.1.1.1&port=80&weight=7&metadata=a%3Db", &[JAVA], "");
    assert_eq!(st, 200);
    let (st, _) = s.request(
        "PATCH",
        "/nacos/v1/ns/instance?serviceName=u&ip=1.1.1.1&port=80&enabled=false",
        "",
    );
    assert_eq!(st, 200);
    let (_, b) = s.request(
        "GET",
        "/nacos/v1/ns/instance?serviceName=u&ip=1.1.1.1&port=80",
        "",
    );
    let v = json(&b);
    assert_eq!(v["weight"], 7.0);
    assert_eq!(v["metadata"]["a"], "b");
    // Disabled instances are counted but not listed.
    let (_, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=u", "");
    assert_eq!(json(&b)["hosts"].as_array().unwrap().len(), 0);
}

#[test]
fn beats_light_full_unknown_and_legacy() {
    let s = start();
    let (st, b) = s.request(
        "PUT",
        "/nacos/v1/ns/instance/beat?serviceName=b&ip=3.3.3.3&port=80",
        "",
    );
    assert_eq!(
        (st, json(&b)),
        (200, json(r#"{"clientBeatInterval":5000,"code":20404}"#))
    );
    let beat = "%7B%22ip%22%3A%223.3.3.3%22%2C%22port%22%3A80%2C%22serviceName%22%3A%22b%22%2C%22cluster%22%3A%22c2%22%2C%22weight%22%3A1.0%2C%22metadata%22%3A%7B%22k%22%3A%22v%22%7D%7D";
    // Java sends the full beat in the form body.
    let (st, b) = s.request(
        "PUT",
        "/nacos/v1/ns/instance/beat?serviceName=b",
        &format!("beat={beat}"),
    );
    assert_eq!(
        (st, json(&b)),
        (
            200,
            json(r#"{"clientBeatInterval":5000,"code":10200,"lightBeatEnabled":true}"#)
        )
    );
    let (st, b) = s.request(
        "PUT",
        "/nacos/v1/ns/instance/beat?serviceName=b&ip=3.3.3.3&port=80&clusterName=c2",
        "",
    );
    assert_eq!((st, json(&b)["code"].clone()), (200, Value::from(10200)));
    let (_, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=b", "");
    let v = json(&b);
    assert_eq!(v["hosts"][0]["clusterName"], "c2");
    assert_eq!(v["hosts"][0]["metadata"]["k"], "v");
    // Legacy aliases.
    let (st, b) = s.request(
        "PUT",
        "/nacos/v1/ns/api/clientBeat?dom=b&ip=3.3.3.3&port=80&clusterName=c2",
        "",
    );
    assert_eq!((st, json(&b)["code"].clone()), (200, Value::from(10200)));
    let (st, b) = s.request("GET", "/nacos/v1/ns/api/srvIPXT?dom=b", "");
    assert_eq!(st, 200);
    assert_eq!(json(&b)["hosts"].as_array().unwrap().len(), 1);
    let (st, b) = s.request("GET", "/nacos/v1/ns/api/allDomNames", "");
    assert_eq!(st, 200);
    assert_eq!(json(&b)["doms"]["public"][0], "b");
    let (st, b) = s.request(
        "POST",
        "/nacos/v1/ns/api?serviceName=b2&ip=1.1.1.1&port=1",
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (200, "ok"),
        "the legacy controller mirrors the instance API"
    );
}

#[test]
fn services_catalog_and_clusters() {
    let s = start();
    let (st, b) = s.request(
        "POST",
        "/nacos/v1/ns/service?serviceName=s1&protectThreshold=0.5&metadata=team%3Dpay",
        "",
    );
    assert_eq!((st, b.as_str()), (200, "ok"));
    let (st, b) = s.request("POST", "/nacos/v1/ns/service?serviceName=s1", "");
    assert_eq!(
        (st, b.as_str()),
        (
            400,
            "caused: specified service already exists, serviceName : DEFAULT_GROUP@@s1;"
        )
    );
    let (st, b) = s.request("POST", "/nacos/v1/ns/service?serviceName=bad%20name", "");
    assert_eq!((st, b.as_str()), (400, "caused: dom name can only have these characters: 0-9a-zA-Z-._:, current: DEFAULT_GROUP@@bad name;"));
    let (st, b) = s.request("GET", "/nacos/v1/ns/service?serviceName=s1", "");
    assert_eq!(st, 200);
    let v = json(&b);
    assert_eq!(v["name"], "s1");
    assert_eq!(v["groupName"], "DEFAULT_GROUP");
    assert_eq!(v["namespaceId"], "public");
    assert_eq!(v["protectThreshold"], 0.5);
    assert_eq!(v["metadata"]["team"], "pay");
    assert_eq!(v["selector"]["type"], "none");
    let (st, b) = s.request("GET", "/nacos/v1/ns/service?serviceName=zz", "");
    assert_eq!(
        (st, b.as_str()),
        (500, "caused: service DEFAULT_GROUP@@zz is not found!;")
    );
    let (st, b) = s.request("PUT", "/nacos/v1/ns/service?serviceName=s1", "");
    assert_eq!(
        (st, b.as_str()),
        (400, "caused: Param 'protectThreshold' is required.;")
    );
    let (st, b) = s.request(
        "PUT",
        "/nacos/v1/ns/service?serviceName=zz&protectThreshold=0.1",
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (500, "caused: service DEFAULT_GROUP@@zz not found!;")
    );
    let (st, _) = s.request(
        "PUT",
        "/nacos/v1/ns/service?serviceName=s1&protectThreshold=0.2",
        "",
    );
    assert_eq!(st, 200);
    let (_, b) = s.request("GET", "/nacos/v1/ns/service?serviceName=s1", "");
    assert!(
        json(&b)["metadata"].as_object().unwrap().is_empty(),
        "update replaces metadata"
    );

    for (g, n) in [
        ("DEFAULT_GROUP", "a2"),
        ("DEFAULT_GROUP", "a1"),
        ("g2", "b1"),
    ] {
        let (st, _) = s.request("POST", &format!("/nacos/v1/ns/instance?serviceName={n}&groupName={g}&ip=9.9.9.9&port=9&metadata=env%3Dprod"), "");
        assert_eq!(st, 200);
    }
    let (_, b) = s.request("GET", "/nacos/v1/ns/service/list?pageNo=1&pageSize=2", "");
    assert_eq!(json(&b), json(r#"{"doms":["a1","a2"],"count":3}"#));
    let (_, b) = s.request("GET", "/nacos/v1/ns/service/list?pageNo=2&pageSize=2", "");
    assert_eq!(json(&b), json(r#"{"doms":["s1"],"count":3}"#));
    let (_, b) = s.request(
        "GET",
        "/nacos/v1/ns/service/list?pageNo=1&pageSize=10&groupName=g2",
        "",
    );
    assert_eq!(json(&b), json(r#"{"doms":["b1"],"count":1}"#));
    let sel = "%7B%22type%22%3A%22label%22%2C%22expression%22%3A%22INSTANCE.metadata.env%20%3D%20%27prod%27%22%7D";
    let (_, b) = s.request(
        "GET",
        &format!("/nacos/v1/ns/service/list?pageNo=1&pageSize=10&groupName=*&selector={sel}"),
        "",
    );
    assert_eq!(json(&b)["count"], 3);
    let (st, b) = s.request("GET", "/nacos/v1/ns/service/list?pageSize=2", "");
    assert_eq!(
        (st, b.as_str()),
        (400, "caused: Param 'pageNo' is required.;")
    );

    let (st, b) = s.request(
        "GET",
        "/nacos/v1/ns/catalog/services?pageNo=1&pageSize=10",
        "",
    );
    assert_eq!(st, 200);
    let v = json(&b);
    assert_eq!(v["count"], 4, "the catalog spans every group");
    let a1 = v["serviceList"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "a1")
        .unwrap();
    assert_eq!(a1["ipCount"], 1);
    assert_eq!(a1["healthyInstanceCount"], 1);
    assert_eq!(a1["clusterCount"], 1);
    assert_eq!(a1["triggerFlag"], "false");
    let (_, b) = s.request(
        "GET",
        "/nacos/v1/ns/catalog/services?pageNo=1&pageSize=10&hasIpCount=true",
        "",
    );
    assert_eq!(json(&b)["count"], 3, "s1 has no instances");
    let (st, b) = s.request(
        "GET",
        "/nacos/v1/ns/catalog/instances?serviceName=a1&clusterName=DEFAULT&pageNo=1&pageSize=10",
        "",
    );
    assert_eq!(st, 200);
    let v = json(&b);
    assert_eq!(v["count"], 1);
    assert_eq!(v["list"][0]["ip"], "9.9.9.9");
    assert_eq!(v["list"][0]["ipDeleteTimeout"], 30000);
    let (st, b) = s.request(
        "GET",
        "/nacos/v1/ns/catalog/instances?serviceName=a1&clusterName=nope&pageNo=1&pageSize=10",
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (500, "caused: cluster nope is not found!;")
    );
    let (st, b) = s.request("GET", "/nacos/v1/ns/catalog/service?serviceName=a1", "");
    assert_eq!(st, 200);
    assert_eq!(json(&b)["clusters"][0]["healthChecker"]["type"], "TCP");

    // Health by hand needs a NONE checker.
    let (st, b) = s.request(
        "PUT",
        "/nacos/v1/ns/health/instance?serviceName=a1&ip=9.9.9.9&port=9&healthy=false",
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (
            400,
            "caused: health check is still working, service: DEFAULT_GROUP@@a1;"
        )
    );
    let (st, b) = s.request(
        "PUT",
        "/nacos/v1/ns/health/instance?serviceName=a1&ip=9.9.9.9&port=9",
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (400, "caused: Param 'healthy' is required.;")
    );
    let (st, b) = s.request("PUT", "/nacos/v1/ns/cluster?serviceName=a1&clusterName=DEFAULT&checkPort=80&useInstancePort4Check=true&healthChecker=%7B%22type%22%3A%22NONE%22%7D", "");
    assert_eq!((st, b.as_str()), (200, "ok"));
    let (st, b) = s.request("PUT", "/nacos/v1/ns/cluster?serviceName=zz&clusterName=DEFAULT&checkPort=80&useInstancePort4Check=true&healthChecker=%7B%22type%22%3A%22NONE%22%7D", "");
    assert_eq!(
        (st, b.as_str()),
        (500, "caused: service not found:DEFAULT_GROUP@@zz;")
    );
    let (st, b) = s.request(
        "PUT",
        "/nacos/v1/ns/health?serviceName=a1&ip=9.9.9.9&port=9&valid=false",
        "",
    );
    assert_eq!((st, b.as_str()), (200, "ok"));
    let (_, b) = s.request(
        "GET",
        "/nacos/v1/ns/instance?serviceName=a1&ip=9.9.9.9&port=9",
        "",
    );
    assert_eq!(json(&b)["healthy"], false);

    // Metadata batch.
    let (st, b) = s.request("PUT", "/nacos/v1/ns/instance/metadata/batch?serviceName=a1&metadata=x%3D1&consistencyType=ephemeral", "");
    assert_eq!(st, 200);
    assert_eq!(
        json(&b),
        json(r#"{"updated":["9.9.9.9:9:unknown:DEFAULT:ephemeral"]}"#)
    );
    let inst = "%5B%7B%22ip%22%3A%229.9.9.9%22%2C%22port%22%3A%229%22%2C%22ephemeral%22%3A%22true%22%2C%22clusterName%22%3A%22DEFAULT%22%7D%5D";
    let (st, b) = s.request(
        "DELETE",
        &format!(
            "/nacos/v1/ns/instance/metadata/batch?serviceName=a1&metadata=x%3D1&instances={inst}"
        ),
        "",
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(json(&b)["updated"].as_array().unwrap().len(), 1);
    let (_, b) = s.request(
        "GET",
        "/nacos/v1/ns/instance?serviceName=a1&ip=9.9.9.9&port=9",
        "",
    );
    assert!(json(&b)["metadata"].get("x").is_none());
    let (st, b) = s.request(
        "PUT",
        "/nacos/v1/ns/instance/metadata/batch?serviceName=a1",
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (400, "caused: Param 'metadata' is required.;")
    );

    // Delete.
    let (st, b) = s.request("DELETE", "/nacos/v1/ns/service?serviceName=s1", "");
    assert_eq!((st, b.as_str()), (200, "ok"));
    let (st, b) = s.request("DELETE", "/nacos/v1/ns/service?serviceName=s1", "");
    assert_eq!(
        (st, b.as_str()),
        (
            400,
            "caused: specified service not exist, serviceName : DEFAULT_GROUP@@s1;"
        )
    );
    let (_, b) = s.request("GET", "/nacos/v1/ns/service/names", "");
    assert_eq!(json(&b)["count"], 1);
}

#[test]
fn namespaces_and_groups_are_separate() {
    let s = start();
    for ns in ["public", "default", "ns-1"] {
        let (st, _) = s.request(
            "POST",
            &format!("/nacos/v1/ns/instance?serviceName=x&ip=1.1.1.1&port=1&namespaceId={ns}"),
            "",
        );
        assert_eq!(st, 200);
    }
    // Python's literal None is "absent".
    let (st, _) = s.request("POST", "/nacos/v1/ns/instance?serviceName=x&ip=2.2.2.2&port=1&clusterName=None&groupName=None&healthy=True&enable=True", "");
    assert_eq!(st, 200);
    let (_, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=x", "");
    let v = json(&b);
    assert_eq!(v["hosts"].as_array().unwrap().len(), 2);
    assert!(v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["clusterName"] == "DEFAULT"));
    let (_, b) = s.request(
        "GET",
        "/nacos/v1/ns/instance/list?serviceName=x&namespaceId=ns-1",
        "",
    );
    assert_eq!(json(&b)["hosts"].as_array().unwrap().len(), 1);
    let (_, b) = s.request(
        "GET",
        "/nacos/v1/ns/instance/list?serviceName=x&groupName=other",
        "",
    );
    assert_eq!(json(&b)["hosts"].as_array().unwrap().len(), 0);
}

#[test]
fn status_endpoints_and_unknown_paths() {
    let s = start();
    let (st, b) = s.request("GET", "/nacos/v1/ns/operator/metrics", "");
    assert_eq!(st, 200);
    let v = json(&b);
    assert_eq!(v["status"], "UP");
    assert_eq!(v["serviceCount"], 0);
    for k in [
        "instanceCount",
        "raftNotifyTaskCount",
        "responsibleServiceCount",
        "responsibleInstanceCount",
        "cpu",
        "load",
        "mem",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    let (st, b) = s.request("GET", "/nacos/v1/ns/operator/servers", "");
    assert_eq!(st, 200);
    let v = json(&b);
    assert_eq!(v["servers"][0]["state"], "UP");
    assert_eq!(v["servers"][0]["address"], s.addr.to_string());
    assert_eq!(v["servers"][0]["extendInfo"]["version"], "1.4.6");
    let (st, b) = s.request("GET", "/nacos/v1/ns/health/server", "");
    assert_eq!(st, 200);
    assert!(json(&b)["msg"]
        .as_str()
        .unwrap()
        .starts_with("Hello! I am Nacos-Naming and healthy!"));
    let (st, b) = s.request("GET", "/nacos/v1/ns/operator/switches", "");
    assert_eq!(st, 200);
    assert_eq!(json(&b)["clientBeatInterval"], 5000);
    assert_eq!(
        s.request("GET", "/nacos/v1/console/health/liveness", ""),
        (200, "OK".into())
    );
    assert_eq!(
        s.request("GET", "/nacos/v1/console/health/readiness", ""),
        (200, "OK".into())
    );
    let (st, b) = s.request("GET", "/nacos/v1/ns/raft/leader", "");
    assert_eq!(
        (st, b.as_str()),
        (500, "caused: old raft protocol already stop;")
    );
    let (st, b) = s.request("GET", "/nacos/v1/ns/nope", "");
    assert_eq!(st, 501);
    assert_eq!(json(&b)["message"], "no such api:GET:/nacos/v1/ns/nope");
    let (st, b) = s.request("DELETE", "/nacos/v1/ns/instance/list", "");
    assert_eq!(st, 501);
    assert_eq!(
        json(&b)["message"],
        "no such api:DELETE:/nacos/v1/ns/instance/list"
    );
    let (st, _) = s.request("GET", "/elsewhere", "");
    assert_eq!(st, 404);
    let (st, b) = s.request("GET", "/metrics", "");
    assert_eq!(st, 200);
    for series in [
        "muster_http_requests_total{endpoint=\"operator_metrics\",status=\"200\"} 1",
        "muster_http_request_duration_seconds_bucket",
        "muster_services{shard=\"1\"}",
        "muster_instances_healthy{shard=\"0\"}",
        "muster_instances_unhealthy{shard=\"0\"}",
        "muster_instance_expirations_total",
        "muster_cross_shard_queue_depth{shard=\"0\"}",
    ] {
        assert!(b.contains(series), "metrics lack {series}:\n{b}");
    }
}

/// A list reply large enough to be cached in the page arena (and sent with `sendfile`) arrives
/// whole and identical: pipelined on one keep-alive connection, to a client whose small
/// receive buffer makes the server's sends partial and hit a full socket.
#[test]
fn large_list_replies_arrive_whole_through_full_sockets() {
    use std::io::{BufReader, Write};
    let s = start();
    let md = "%7B%22zone%22%3A%22east-1a%22%2C%22version%22%3A%221.2.3%22%7D";
    for i in 0..200 {
        let (st, b) = s.request(
            "POST",
            &format!(
                "/nacos/v1/ns/instance?serviceName=big&ip=10.1.{}.{}&port=8080&metadata={md}",
                i / 256,
                i % 256
            ),
            "",
        );
        assert_eq!((st, b.as_str()), (200, "ok"));
    }
    let arena = |s: &Server| -> u64 {
        let (_, m) = s.request("GET", "/metrics", "");
        m.lines()
            .find_map(|l| l.strip_prefix("muster_arena_bytes "))
            .and_then(|v| v.parse().ok())
            .expect("muster_arena_bytes gauge")
    };
    let before = arena(&s);

    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&s.addr.into()).unwrap();
    let mut stream: std::net::TcpStream = sock.into();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let req = "GET /nacos/v1/ns/instance/list?serviceName=big HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(req.repeat(3).as_bytes()).unwrap();
    // Let the server fill the small window before anything is read: poll (every 10 ms, at
    // most 10 s) until the bytes waiting on our side (at least 1 KiB of the more than 48 KiB sent) stop
    // growing, unchanged over 5 polls. (On Linux 6 they stop at the 4 KiB asked for.)
    let queued = |s: &std::net::TcpStream| -> usize {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, on a socket this test owns.
        let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        n as usize
    };
    let start = std::time::Instant::now();
    let (mut last, mut unchanged) = (0, 0);
    for _ in 0..1000 {
        if unchanged == 5 || start.elapsed() > std::time::Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        let q = queued(&stream);
        unchanged = if q >= 1024 && q == last {
            unchanged + 1
        } else {
            0
        };
        last = q;
    }
    assert_eq!(
        unchanged, 5,
        "the reply did not fill the window within 10 s ({last} bytes waiting)"
    );
    let mut r = BufReader::with_capacity(1024, stream);
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let (st, _, body) = common::read_response(&mut r);
        assert_eq!(st, 200);
        let v = json(&body);
        let hosts = v["hosts"].as_array().unwrap();
        assert_eq!(hosts.len(), 200);
        assert!(hosts.iter().all(|h| h["metadata"]["zone"] == "east-1a"));
        assert!(body.len() > 16 * 1024, "{} bytes", body.len());
        bodies.push(v["hosts"].clone());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert!(
        arena(&s) > before,
        "the host array was not cached in the arena"
    );
}
