//! Config export and import in Nacos 1.4.6's zip format (`ConfigController.exportConfig`,
//! `importAndPublishConfig`).
//!
//! The zip holds one entry `group/dataId` per config, and `.meta.yml` with lines
//! `group.dataId~ext.app=appName` (the last `.` of the data id written `~`) for configs with an
//! app name; `exportV2=true` writes `.metadata.yml` instead (`metadata:` then one block item per
//! config: `appName`, `dataId`, `desc`, `group`, `type`, empty ones left out, as SnakeYAML's
//! `dumpAsMap` writes Nacos's `ConfigMetadata`), and an import reads either. Entries carry a
//! fixed time (1980-01-01), so exporting the same configs gives the same bytes. An import is one
//! raft entry: every config in it is published, or none.
//!
//! Refusals (no file, an unknown namespace, a zip that does not read, an entry whose name climbs
//! out (`../x`) or is absolute, bad metadata, a bad data id) answer 400 with Nacos's
//! `RestResult` body and change nothing. Nacos answers these with 200 and the code in the body.

use std::io::{Cursor, Read, Write};

use bytes::Bytes;

use crate::api::config::{client_ip, glob};
use crate::api::{Answer, Ctx};
use crate::clock::wall_ms;
use crate::config::params;
use crate::consensus::config::{ConfigKey, ConfigOp, ConfigSpec, Retention, Variant};
use crate::error::ApiResult;
use crate::http::{Chunks, Request};

/// Most entries one import may hold.
pub(crate) const MAX_ENTRIES: usize = 10_000;
/// Most bytes one entry may inflate to (a config is at most 10 Mi characters).
const MAX_ENTRY_BYTES: u64 = 40 << 20;

/// The data id as `.meta.yml` spells it: the last `.` becomes `~`.
fn meta_id(data_id: &str) -> String {
    match data_id.rfind('.') {
        Some(i) => format!("{}~{}", &data_id[..i], &data_id[i + 1..]),
        None => data_id.to_string(),
    }
}

/// `GET ?export=true[&dataId&group&appName&tenant&ids]`: the matching configs as a zip with
/// `.meta.yml`; with `v2` (`exportV2=true`), with `.metadata.yml` instead (app name, desc and
/// type of every config, as Nacos's SnakeYAML `dumpAsMap` writes it).
pub fn export(ctx: &Ctx<'_>, v2: bool) -> ApiResult<Answer> {
    let tenant = params::normalize_tenant(ctx.params.get("tenant"));
    let data_id = ctx.params.get("dataId").unwrap_or("").trim();
    let group = ctx.params.get("group").unwrap_or("").trim();
    let app = ctx.params.get("appName").unwrap_or("").trim();
    let ids: Vec<u64> = ctx
        .params
        .get("ids")
        .unwrap_or("")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = ctx.shard.shared.configs.state.read();
    let mut items: Vec<_> = data
        .configs
        .iter()
        .filter(|(k, item)| {
            if !ids.is_empty() {
                return ids.contains(&item.id);
            }
            k.tenant == tenant
                && (data_id.is_empty() || glob(data_id, &k.data_id))
                && (group.is_empty() || k.group == group)
                && (app.is_empty() || item.spec.app_name == app)
        })
        .map(|(k, item)| (k.clone(), item.clone()))
        .collect();
    drop(data);
    items.sort_by_key(|(_, item)| item.id);
    let mut meta = String::new();
    let mut meta_v2: Vec<[(&str, String); 5]> = Vec::new();
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    let write_err = |e: &dyn std::fmt::Display| {
        crate::error::ApiError::server(format!("cannot write the export zip: {e}"))
    };
    for (k, item) in &items {
        if v2 {
            meta_v2.push([
                ("appName", item.spec.app_name.clone()),
                ("dataId", k.data_id.clone()),
                ("desc", item.spec.desc.clone()),
                ("group", k.group.clone()),
                ("type", item.spec.kind.clone()),
            ]);
        } else if !item.spec.app_name.trim().is_empty() {
            meta.push_str(&format!(
                "{}.{}.app={}\r\n",
                k.group,
                meta_id(&k.data_id),
                item.spec.app_name
            ));
        }
        zip.start_file(format!("{}/{}", k.group, k.data_id), opts)
            .map_err(|e| write_err(&e))?;
        zip.write_all(item.spec.content.as_bytes())
            .map_err(|e| write_err(&e))?;
    }
    if v2 {
        let mut yml = String::from("metadata:");
        if meta_v2.is_empty() {
            yml.push_str(" []");
        }
        yml.push('\n');
        for fields in &meta_v2 {
            let mut first = true;
            // SnakeYAML leaves null properties out; an empty app name or desc is Nacos's null.
            for (name, value) in fields.iter().filter(|(_, v)| !v.is_empty()) {
                yml.push_str(if first { "- " } else { "  " });
                first = false;
                yml.push_str(&format!("{name}: {}\n", yaml_scalar(value)));
            }
        }
        zip.start_file(".metadata.yml", opts)
            .map_err(|e| write_err(&e))?;
        zip.write_all(yml.as_bytes()).map_err(|e| write_err(&e))?;
    } else if !meta.is_empty() {
        zip.start_file(".meta.yml", opts)
            .map_err(|e| write_err(&e))?;
        zip.write_all(meta.as_bytes()).map_err(|e| write_err(&e))?;
    }
    let bytes = zip.finish().map_err(|e| write_err(&e))?.into_inner();
    let name = {
        let secs = (wall_ms() / 1000) as i64;
        let (y, mo, d) = crate::clock::civil_from_days(secs.div_euclid(86_400));
        let r = secs.rem_euclid(86_400);
        format!(
            "nacos_config_export_{y:04}{mo:02}{d:02}{:02}{:02}{:02}.zip",
            r / 3600,
            r % 3600 / 60,
            r % 60
        )
    };
    Ok(Answer {
        status: 200,
        content_type: "application/octet-stream",
        body: Chunks::one(Bytes::from(bytes)),
        headers: vec![("Content-Disposition", format!("attachment;filename={name}"))],
    })
}

/// A string as SnakeYAML writes a plain scalar, or single-quoted when a plain one would read
/// back as something else (empty, a number, a boolean or null, leading or trailing blanks, or
/// YAML's indicator characters).
fn yaml_scalar(v: &str) -> String {
    let special = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    ];
    let needs_quotes = v.is_empty()
        || v.trim() != v
        || special.iter().any(|w| v.eq_ignore_ascii_case(w))
        || v.parse::<f64>().is_ok()
        || v.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`".contains(c))
        || v.contains(": ")
        || v.contains(" #")
        || v.chars().any(|c| c.is_control());
    if needs_quotes {
        format!("'{}'", v.replace('\'', "''"))
    } else {
        v.to_string()
    }
}

/// Reads `.metadata.yml` as [`export`] writes it (block style: `metadata:` then `- key: value`
/// items; plain or single-quoted scalars): per config `(group, dataId)`, its app name, desc and
/// type. `None` when it is not that shape.
#[allow(clippy::type_complexity)]
fn read_metadata_v2(text: &str) -> Option<Vec<((String, String), (String, String, String))>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    if lines.next()?.trim_end() != "metadata:" {
        return None;
    }
    let unquote = |v: &str| -> Option<String> {
        let v = v.trim();
        match v.strip_prefix('\'') {
            Some(rest) => Some(rest.strip_suffix('\'')?.replace("''", "'")),
            None => Some(v.to_string()),
        }
    };
    let mut items: Vec<std::collections::HashMap<String, String>> = Vec::new();
    for line in lines {
        let body = if let Some(rest) = line.strip_prefix("- ") {
            items.push(Default::default());
            rest
        } else {
            line.strip_prefix("  ")?
        };
        let (k, v) = body.split_once(':')?;
        items.last_mut()?.insert(k.trim().to_string(), unquote(v)?);
    }
    items
        .into_iter()
        .map(|mut m| {
            let group = m.remove("group").filter(|g| !g.trim().is_empty())?;
            let data_id = m.remove("dataId").filter(|d| !d.trim().is_empty())?;
            Some((
                (group, data_id),
                (
                    m.remove("appName").unwrap_or_default(),
                    m.remove("desc").unwrap_or_default(),
                    m.remove("type").unwrap_or_default(),
                ),
            ))
        })
        .collect()
}

/// A refused import: 400 with Nacos's `RestResult` (`code`, its message, `data`).
fn refused(code: u32, data: serde_json::Value) -> Answer {
    let msg = match code {
        100001 => "目标 namespace 不存在",
        100002 => "导入的元数据非法",
        100004 => "解析数据失败",
        _ => "导入的文件数据为空",
    };
    let mut a = Answer::json(&serde_json::json!({"code": code, "message": msg, "data": data}));
    a.status = 400;
    a
}

/// The bytes of the multipart part named `name` (`Content-Disposition: form-data;
/// name="file"`), if the body holds one.
pub(crate) fn multipart_part<'b>(
    body: &'b [u8],
    content_type: &str,
    name: &str,
) -> Option<&'b [u8]> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delim.as_bytes());
    let starts: Vec<usize> = finder.find_iter(body).collect();
    for w in starts.windows(2) {
        let part = &body[w[0] + delim.len()..w[1]];
        let part = part.strip_prefix(b"\r\n")?;
        let head_end = memchr::memmem::find(part, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&part[..head_end]).ok()?;
        let named = head.lines().any(|l| {
            l.to_ascii_lowercase().starts_with("content-disposition")
                && l.contains(&format!("name=\"{name}\""))
        });
        if named {
            let data = &part[head_end + 4..];
            return Some(data.strip_suffix(b"\r\n").unwrap_or(data));
        }
    }
    None
}

/// One config read from an import zip.
pub(crate) struct Entry {
    /// The entry name's first component.
    pub(crate) group: String,
    /// The entry name's second (last) component.
    pub(crate) data_id: String,
    /// The entry's bytes, UTF-8.
    pub(crate) content: String,
}

/// Why a zip is refused (the `RestResult` code).
pub(crate) enum Unzip {
    /// 100004: not a zip, a damaged entry, a name that climbs out, too many or too large.
    Parse,
    /// 100002: a `.meta.yml` line that is not `key=value`.
    Meta,
}

/// What an import knows of each config besides its content.
pub(crate) struct Meta {
    /// `.meta.yml`: `group.dataId~ext.app` → app name.
    v1: Vec<(String, String)>,
    /// `.metadata.yml`: `(group, dataId)` → (app name, desc, type); `Some` for a V2 export.
    #[allow(clippy::type_complexity)]
    v2: Option<Vec<((String, String), (String, String, String))>>,
}

/// Reads the configs and the metadata of a Nacos export; unrecognised entry names are listed.
pub(crate) fn unzip(bytes: &[u8]) -> Result<(Vec<Entry>, Meta, Vec<String>), Unzip> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|_| Unzip::Parse)?;
    if archive.len() > MAX_ENTRIES {
        return Err(Unzip::Parse);
    }
    let mut entries = Vec::new();
    let mut meta = Meta {
        v1: Vec::new(),
        v2: None,
    };
    let mut unrecognized = Vec::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).map_err(|_| Unzip::Parse)?;
        if f.is_dir() {
            continue;
        }
        let name = f.name().to_string();
        // Zip slip: a name that is absolute or climbs out is refused, not skipped.
        if name.starts_with('/')
            || name.starts_with('\\')
            || name.split(['/', '\\']).any(|c| c == "..")
        {
            return Err(Unzip::Parse);
        }
        let mut data = Vec::new();
        f.by_ref()
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(|_| Unzip::Parse)?;
        if data.len() as u64 > MAX_ENTRY_BYTES {
            return Err(Unzip::Parse);
        }
        let text = String::from_utf8(data).map_err(|_| Unzip::Parse)?;
        if name == ".meta.yml" {
            for line in text.split(['\r', '\n']).filter(|l| !l.is_empty()) {
                let kv: Vec<&str> = line.split('=').collect();
                if kv.len() != 2 {
                    return Err(Unzip::Meta);
                }
                meta.v1.push((kv[0].to_string(), kv[1].to_string()));
            }
            continue;
        }
        if name == ".metadata.yml" {
            meta.v2 = Some(read_metadata_v2(&text).ok_or(Unzip::Meta)?);
            continue;
        }
        let parts: Vec<&str> = name.split('/').collect();
        if parts.len() != 2 {
            unrecognized.push(name);
            continue;
        }
        entries.push(Entry {
            group: parts[0].to_string(),
            data_id: parts[1].to_string(),
            content: text,
        });
    }
    Ok((entries, meta, unrecognized))
}

/// The type Nacos guesses from a data id's extension (`FileTypeEnum`), `text` otherwise.
fn type_of(data_id: &str) -> &'static str {
    match data_id.rsplit_once('.') {
        Some((_, ext)) => match ext.to_ascii_lowercase().as_str() {
            "yml" | "yaml" => "yaml",
            "properties" => "properties",
            "xml" => "xml",
            "json" => "json",
            "html" | "htm" => "html",
            _ => "text",
        },
        None => "text",
    }
}

/// `POST ?import=true&namespace&policy=ABORT|SKIP|OVERWRITE` with a multipart `file`.
pub async fn import(ctx: &Ctx<'_>, req: &Request<'_>) -> ApiResult<Answer> {
    let ct = req.header("Content-Type").unwrap_or("");
    let Some(file) = multipart_part(req.body, ct, "file") else {
        return Ok(refused(100005, serde_json::json!({})));
    };
    let namespace = params::normalize_tenant(ctx.params.get("namespace")).to_string();
    let policy = ctx.params.get("policy").unwrap_or("ABORT").to_string();
    let configs = &ctx.shard.shared.configs;
    if !namespace.is_empty() && !configs.state.read().namespaces.contains_key(&namespace) {
        return Ok(refused(100001, serde_json::json!({"succCount": 0})));
    }
    let (mut entries, meta, mut unrecognized) = match unzip(file) {
        Ok(x) => x,
        Err(Unzip::Parse) => return Ok(refused(100004, serde_json::json!({"succCount": 0}))),
        Err(Unzip::Meta) => return Ok(refused(100002, serde_json::json!({"succCount": 0}))),
    };
    // A V2 export lists its configs in .metadata.yml: an entry it does not list is
    // unrecognised.
    if let Some(v2) = &meta.v2 {
        let (listed, not): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| {
            v2.iter()
                .any(|((g, d), _)| *g == e.group && *d == e.data_id)
        });
        entries = listed;
        unrecognized.extend(
            not.into_iter()
                .map(|e| format!("{}/{}", e.group, e.data_id)),
        );
    }
    if entries.is_empty() {
        return Ok(refused(100005, serde_json::json!({"succCount": 0})));
    }
    let max = ctx.shard.shared.config.config_max_content;
    for e in &entries {
        params::check_key(&e.data_id, &e.group)?;
        params::check_content(&e.content, max)?;
    }
    // (app name, desc, type) of an entry, from whichever metadata the zip has.
    let meta_of = |e: &Entry| -> (String, String, String) {
        if let Some(v2) = &meta.v2 {
            if let Some((_, m)) = v2
                .iter()
                .find(|((g, d), _)| *g == e.group && *d == e.data_id)
            {
                let kind = if m.2.is_empty() {
                    type_of(&e.data_id).to_string()
                } else {
                    params::normalize_type(Some(&m.2)).to_string()
                };
                return (m.0.clone(), m.1.clone(), kind);
            }
        }
        let k = format!("{}.{}.app", e.group, meta_id(&e.data_id));
        let app = meta
            .v1
            .iter()
            .find(|(mk, _)| *mk == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        (app, String::new(), type_of(&e.data_id).to_string())
    };
    let cfg = &ctx.shard.shared.config;
    let retention = Retention {
        max_per_config: cfg.config_history_max,
        max_age_ms: cfg.config_history_retention_ms,
    };
    let src_ip = client_ip(req, ctx);
    let time_ms = wall_ms();
    // The policy is decided against the state now; the batch is one entry, applied whole.
    let (mut succ, mut skip) = (0usize, 0usize);
    let mut fail_data = Vec::new();
    let mut skip_data = Vec::new();
    let mut ops = Vec::new();
    {
        let data = configs.state.read();
        let mut iter = entries.iter();
        while let Some(e) = iter.next() {
            let key = ConfigKey::new(&namespace, &e.group, &e.data_id);
            let exists = data.configs.contains_key(&key);
            if exists && policy != "OVERWRITE" {
                if policy == "SKIP" {
                    skip += 1;
                    skip_data.push(serde_json::json!({"dataId": e.data_id, "group": e.group}));
                    continue;
                }
                // ABORT: this one fails, the rest are skipped.
                fail_data.push(serde_json::json!({"dataId": e.data_id, "group": e.group}));
                for r in iter.by_ref() {
                    skip_data.push(serde_json::json!({"dataId": r.data_id, "group": r.group}));
                }
                break;
            }
            succ += 1;
            let (app_name, desc, kind) = meta_of(e);
            ops.push(ConfigOp::Publish {
                key,
                variant: Variant::Normal,
                spec: ConfigSpec {
                    content: e.content.clone(),
                    kind,
                    app_name,
                    desc,
                    src_ip: src_ip.clone(),
                    ..Default::default()
                },
                time_ms,
                retention,
            });
        }
    }
    if !ops.is_empty() {
        configs.propose(ConfigOp::Batch { ops }).await?;
    }
    let mut data = serde_json::json!({"succCount": succ, "skipCount": skip});
    if !fail_data.is_empty() {
        data["failData"] = serde_json::Value::Array(fail_data);
    }
    if !skip_data.is_empty() {
        data["skipData"] = serde_json::Value::Array(skip_data);
    }
    if !unrecognized.is_empty() {
        data["unrecognizedCount"] = unrecognized.len().into();
        data["unrecognizedData"] = unrecognized
            .iter()
            .map(|n| serde_json::json!({"itemName": n}))
            .collect();
    }
    Ok(Answer::json(&serde_json::json!({
        "code": 200, "message": "导入成功", "data": data,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_ids_globs_types_and_multipart() {
        assert_eq!(meta_id("app.yaml"), "app~yaml");
        assert_eq!(meta_id("a.b.c"), "a.b~c");
        assert_eq!(meta_id("plain"), "plain");
        assert_eq!(type_of("x.YML"), "yaml");
        assert_eq!(type_of("x"), "text");
        assert_eq!(yaml_scalar("app.yaml"), "app.yaml");
        assert_eq!(yaml_scalar("123"), "'123'");
        assert_eq!(yaml_scalar("true"), "'true'");
        assert_eq!(yaml_scalar("it's: x"), "'it''s: x'");
        let yml = "metadata:\n- appName: shop\n  dataId: a.yaml\n  desc: 'it''s'\n  group: G\n  type: yaml\n- dataId: '123'\n  group: H\n  type: text\n";
        let m = read_metadata_v2(yml).unwrap();
        assert_eq!(m[0].0, ("G".to_string(), "a.yaml".to_string()));
        assert_eq!(
            m[0].1,
            ("shop".to_string(), "it's".to_string(), "yaml".to_string())
        );
        assert_eq!(m[1].0, ("H".to_string(), "123".to_string()));
        assert!(read_metadata_v2("nope: 1\n").is_none());
        assert!(
            read_metadata_v2("metadata:\n- group: G\n").is_none(),
            "no dataId"
        );
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nno\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\nContent-Type: application/zip\r\n\r\nPK\x03\x04data\r\n--XX--\r\n";
        assert_eq!(
            multipart_part(body, "multipart/form-data; boundary=XX", "file"),
            Some(&b"PK\x03\x04data"[..])
        );
        assert_eq!(
            multipart_part(body, "multipart/form-data; boundary=XX", "nope"),
            None
        );
        assert_eq!(multipart_part(body, "text/plain", "file"), None);
    }
}
