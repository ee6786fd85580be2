//! The OpenAPI document as served at `/openapi.json` and committed in `docs/openapi.json`:
//! poem-openapi's output with the one correction it needs to describe the wire truthfully.
//!
//! poem-openapi documents an `Option<T>` (or `MaybeUndefined<T>`) field as an optional `T`, but
//! serializes `None` as `null` and accepts `null` in requests, which OpenAPI 3.0 only allows with
//! `nullable: true`. So every property that is neither required nor has a default (the two other
//! ways poem-openapi makes a property optional) is marked nullable; a bare `$ref` is wrapped in
//! `allOf`, because siblings of `$ref` are ignored.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// JSON with object keys in document order (serde_json's `Value` sorts them), so the committed
/// spec keeps poem-openapi's layout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Ordered {
    Object(IndexMap<String, Ordered>),
    Array(Vec<Ordered>),
    Scalar(Value),
}

/// `spec` (poem-openapi's pretty JSON) with optional properties marked nullable; unchanged if it
/// does not parse (it always does: poem-openapi wrote it).
pub fn with_nullable_optionals(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Ordered>(spec) else {
        return spec.to_owned();
    };
    if let Some(schemas) = object(&mut doc, "components").and_then(|c| object(c, "schemas"))
        && let Ordered::Object(schemas) = schemas
    {
        for schema in schemas.values_mut() {
            mark_schema(schema);
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_owned())
}

fn object<'a>(value: &'a mut Ordered, key: &str) -> Option<&'a mut Ordered> {
    match value {
        Ordered::Object(map) => map.get_mut(key),
        _ => None,
    }
}

fn mark_schema(schema: &mut Ordered) {
    let Ordered::Object(schema) = schema else {
        return;
    };
    let required: Vec<String> = match schema.get("required") {
        Some(Ordered::Array(names)) => names
            .iter()
            .filter_map(|n| match n {
                Ordered::Scalar(Value::String(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let Some(Ordered::Object(properties)) = schema.get_mut("properties") else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        if required.contains(name) {
            continue;
        }
        let Ordered::Object(map) = property else {
            continue;
        };
        if map.contains_key("default") {
            continue;
        }
        if let Some(reference) = map.shift_remove("$ref") {
            map.insert(
                "allOf".into(),
                Ordered::Array(vec![Ordered::Object(IndexMap::from([(
                    "$ref".into(),
                    reference,
                )]))]),
            );
        }
        map.insert("nullable".into(), Ordered::Scalar(Value::Bool(true)));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::with_nullable_optionals;

    #[test]
    fn optional_properties_become_nullable_and_others_do_not() {
        let spec = json!({
            "components": {"schemas": {"Thing": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": {"type": "string"},
                    "note": {"type": "string"},
                    "owner": {"$ref": "#/components/schemas/User"},
                    "tags": {"type": "array", "items": {"type": "string"}, "default": []}
                }
            }}}
        })
        .to_string();
        let out: Value = serde_json::from_str(&with_nullable_optionals(&spec)).unwrap();
        let properties = &out["components"]["schemas"]["Thing"]["properties"];
        assert_eq!(properties["id"], json!({"type": "string"}));
        assert_eq!(
            properties["note"],
            json!({"type": "string", "nullable": true})
        );
        assert_eq!(
            properties["owner"],
            json!({"allOf": [{"$ref": "#/components/schemas/User"}], "nullable": true})
        );
        assert!(properties["tags"].get("nullable").is_none());
    }

    #[test]
    fn key_order_is_kept() {
        let spec = r#"{"b": 1, "a": {"z": 2, "y": 3}}"#;
        let out = with_nullable_optionals(spec);
        assert!(out.find("\"b\"") < out.find("\"a\""));
        assert!(out.find("\"z\"") < out.find("\"y\""));
    }
}
