//! Config parameter rules (Nacos 1.4.6 `ParamUtils`, `NamespaceUtil`, `ConfigType`).
//!
//! Every failure is a [`ParamError`], answered 400 with Nacos's message and changing nothing.

/// Why a config request's parameters are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A blank or badly spelt data id.
    #[error("invalid dataId : {0}")]
    DataId(String),
    /// A blank or badly spelt group.
    #[error("invalid group : {0}")]
    Group(String),
    /// Blank content.
    #[error("content is blank : {0}")]
    BlankContent(String),
    /// Content over the limit (in UTF-16 units, as Java counts `String.length()`).
    #[error("invalid content, over {0}")]
    ContentTooLong(usize),
    /// A badly spelt tag.
    #[error("invalid tag : {0}")]
    Tag(String),
    /// A tag over 16 characters.
    #[error("too long tag, over 16")]
    TagTooLong,
    /// A badly spelt namespace.
    #[error("invalid tenant")]
    Tenant,
    /// A namespace id over 128 characters.
    #[error("too long tenant, over 128")]
    TenantTooLong,
    /// More than 5 `config_tags`.
    #[error("too much config_tags, over 5")]
    TooManyConfigTags,
    /// A `config_tags` entry over 64 characters.
    #[error("too long tag, over 64")]
    ConfigTagTooLong,
    /// A `desc` over 128 characters.
    #[error("too long desc, over 128")]
    DescTooLong,
    /// A data id or group longer than Nacos's columns hold (255 and 128 characters).
    #[error("too long {what}, over {max}")]
    TooLong {
        /// `dataId` or `group`.
        what: &'static str,
        /// The limit in characters.
        max: usize,
    },
}

/// Longest data id (Nacos's `config_info.data_id` column), in characters.
pub const DATA_ID_MAX: usize = 255;
/// Longest group (Nacos's `config_info.group_id` column), in characters.
pub const GROUP_MAX: usize = 128;
/// Longest tag, in characters.
pub const TAG_MAX: usize = 16;
/// Longest namespace id, in characters.
pub const TENANT_MAX: usize = 128;

/// `ParamUtils.isValid`: letters and digits (Unicode, as Java's `Character.isLetterOrDigit`)
/// and `_-.:` only. The empty string is valid (blankness is checked apart).
pub fn is_valid(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// `ParamUtils.checkParam(dataId, group, …)` plus the column lengths.
pub fn check_key(data_id: &str, group: &str) -> Result<(), ParamError> {
    if blank(data_id) || !is_valid(data_id.trim()) {
        return Err(ParamError::DataId(data_id.to_string()));
    }
    if blank(group) || !is_valid(group) {
        return Err(ParamError::Group(group.to_string()));
    }
    if data_id.chars().count() > DATA_ID_MAX {
        return Err(ParamError::TooLong {
            what: "dataId",
            max: DATA_ID_MAX,
        });
    }
    if group.chars().count() > GROUP_MAX {
        return Err(ParamError::TooLong {
            what: "group",
            max: GROUP_MAX,
        });
    }
    Ok(())
}

/// Content: never blank, at most `max` UTF-16 units.
pub fn check_content(content: &str, max: usize) -> Result<(), ParamError> {
    if blank(content) {
        return Err(ParamError::BlankContent(content.to_string()));
    }
    // Counting stops at max + 1: a 10 MiB content is not walked twice.
    if content.len() > max && content.encode_utf16().take(max + 1).count() > max {
        return Err(ParamError::ContentTooLong(max));
    }
    Ok(())
}

/// `ParamUtils.checkParam(tag)`.
pub fn check_tag(tag: &str) -> Result<(), ParamError> {
    if blank(tag) {
        return Ok(());
    }
    if !is_valid(tag.trim()) {
        return Err(ParamError::Tag(tag.to_string()));
    }
    if tag.chars().count() > TAG_MAX {
        return Err(ParamError::TagTooLong);
    }
    Ok(())
}

/// `ParamUtils.checkTenant`.
pub fn check_tenant(tenant: &str) -> Result<(), ParamError> {
    if blank(tenant) {
        return Ok(());
    }
    if !is_valid(tenant.trim()) {
        return Err(ParamError::Tenant);
    }
    if tenant.chars().count() > TENANT_MAX {
        return Err(ParamError::TenantTooLong);
    }
    Ok(())
}

/// `ParamUtils.checkParam(configAdvanceInfo)` for `config_tags` and `desc`.
pub fn check_advance(config_tags: &str, desc: &str) -> Result<(), ParamError> {
    if !config_tags.is_empty() {
        let tags: Vec<&str> = config_tags.split(',').collect();
        if tags.len() > 5 {
            return Err(ParamError::TooManyConfigTags);
        }
        if tags.iter().any(|t| t.chars().count() > 64) {
            return Err(ParamError::ConfigTagTooLong);
        }
    }
    if desc.chars().count() > 128 {
        return Err(ParamError::DescTooLong);
    }
    Ok(())
}

/// `NamespaceUtil.processNamespaceParameter` (reads only): `public`, `null` and blank are the
/// public namespace, `""`. Publishing does not normalise.
pub fn normalize_tenant(tenant: Option<&str>) -> &str {
    match tenant.map(str::trim) {
        None => "",
        Some(t) if t.is_empty() || t.eq_ignore_ascii_case("public") || t == "null" => "",
        Some(t) => t,
    }
}

/// `ConfigType.isValidType`, else `text`.
pub fn normalize_type(kind: Option<&str>) -> &'static str {
    const TYPES: [&str; 6] = ["properties", "xml", "json", "text", "html", "yaml"];
    match kind {
        Some(k) => TYPES.iter().find(|t| **t == k).copied().unwrap_or("text"),
        None => "text",
    }
}

/// The `Content-Type` of a config of type `kind` (`FileTypeEnum`).
pub fn content_type(kind: &str) -> &'static str {
    match kind {
        "json" => "application/json;charset=UTF-8",
        "xml" => "application/xml;charset=UTF-8",
        "html" => "text/html;charset=UTF-8",
        _ => "text/plain;charset=UTF-8",
    }
}

/// A namespace id as `NamespaceController` accepts it: `[\w-]+`, at most 128 characters.
pub fn valid_namespace_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= TENANT_MAX
        && id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_param_utils() {
        assert!(check_key("app.yaml", "DEFAULT_GROUP").is_ok());
        assert!(
            check_key("中文:a-b_c.d", "G").is_ok(),
            "Unicode letters are letters"
        );
        assert_eq!(check_key("a/b", "G"), Err(ParamError::DataId("a/b".into())));
        assert_eq!(check_key(" ", "G"), Err(ParamError::DataId(" ".into())));
        assert_eq!(check_key("a", "g g"), Err(ParamError::Group("g g".into())));
        assert_eq!(
            check_key(&"a".repeat(256), "G"),
            Err(ParamError::TooLong {
                what: "dataId",
                max: 255
            })
        );
        assert_eq!(
            ParamError::DataId("x".into()).to_string(),
            "invalid dataId : x"
        );
    }

    #[test]
    fn content_tags_and_tenants() {
        assert!(check_content(" \n", 10).is_err());
        assert!(check_content("0123456789", 10).is_ok());
        assert_eq!(
            check_content("0123456789a", 10),
            Err(ParamError::ContentTooLong(10))
        );
        // Java counts UTF-16 units: five 3-byte characters are 5, not 15.
        assert!(check_content("ééééé", 5).is_ok());
        assert!(check_tag("").is_ok());
        assert_eq!(
            check_tag("a".repeat(17).as_str()),
            Err(ParamError::TagTooLong)
        );
        assert_eq!(check_tag("a b"), Err(ParamError::Tag("a b".into())));
        assert_eq!(check_tenant("a/b"), Err(ParamError::Tenant));
        assert_eq!(normalize_tenant(Some("public")), "");
        assert_eq!(normalize_tenant(Some("null")), "");
        assert_eq!(normalize_tenant(Some("dev")), "dev");
        assert_eq!(normalize_type(Some("yaml")), "yaml");
        assert_eq!(normalize_type(Some("toml")), "text");
        assert!(valid_namespace_id("dev-1_a"));
        assert!(!valid_namespace_id("dev.1"));
    }
}
