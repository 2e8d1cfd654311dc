//! Schema URNs and the discovery documents (`/ServiceProviderConfig`, `/ResourceTypes`,
//! `/Schemas`, RFC 7644 §4) that tell an IdP what this service provider supports.

use serde_json::{json, Value};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const SP_CONFIG_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Largest page a list request gets, whatever `count` it asks for.
pub const MAX_RESULTS: usize = 200;

/// True for a schema extension's URN: the enterprise extension, or any other schema URN of the
/// form the RFC's and the IdPs' extensions take, `urn:…:User` or `urn:…:Group` (Okta's and
/// Entra's custom extensions, `urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User`),
/// that is not a core schema. A path or key naming one names the whole extension object, kept
/// under that URN; `urn:…:User:title` names an attribute of it.
pub fn is_extension_urn(urn: &str) -> bool {
    if urn.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) {
        return true;
    }
    let resource = urn.rsplit(':').next().unwrap_or_default();
    urn.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
        && !is_core_schema(urn)
        && (resource.eq_ignore_ascii_case("User") || resource.eq_ignore_ascii_case("Group"))
}

/// True for the core User and Group schema URNs, whose attributes need no URN prefix.
pub fn is_core_schema(urn: &str) -> bool {
    urn.eq_ignore_ascii_case(USER_SCHEMA) || urn.eq_ignore_ascii_case(GROUP_SCHEMA)
}

/// `/ServiceProviderConfig`. `base` is the SCIM base URL (where `/Users` lives).
pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": [SP_CONFIG_SCHEMA],
        "documentationUri": "https://github.com/unseat/unseat",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with the bearer token issued for this SCIM endpoint",
            "primary": true
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")}
    })
}

fn resource_type(base: &str, name: &str, endpoint: &str, schema: &str, extensions: Value) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": name,
        "name": name,
        "endpoint": endpoint,
        "description": name,
        "schema": schema,
        "schemaExtensions": extensions,
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{name}")}
    })
}

/// The `User` and `Group` resource types.
pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        resource_type(
            base,
            "User",
            "/Users",
            USER_SCHEMA,
            json!([{"schema": ENTERPRISE_USER_SCHEMA, "required": false}]),
        ),
        resource_type(base, "Group", "/Groups", GROUP_SCHEMA, json!([])),
    ]
}

fn attr(
    name: &str,
    ty: &str,
    multi: bool,
    required: bool,
    mutability: &str,
    uniqueness: &str,
    case_exact: bool,
) -> Value {
    json!({
        "name": name, "type": ty, "multiValued": multi, "description": name, "required": required,
        "caseExact": case_exact, "mutability": mutability, "returned": "default", "uniqueness": uniqueness
    })
}

fn string(name: &str) -> Value {
    attr(name, "string", false, false, "readWrite", "none", false)
}

fn complex(name: &str, multi: bool, subs: Vec<Value>) -> Value {
    let mut a = attr(name, "complex", multi, false, "readWrite", "none", false);
    a["subAttributes"] = Value::Array(subs);
    a
}

/// A multi-valued attribute of labels (RFC 7643 §4.1.2's roles and entitlements).
fn labelled(name: &str) -> Value {
    let primary = attr("primary", "boolean", false, false, "readWrite", "none", false);
    complex(name, true, vec![string("value"), string("display"), string("type"), primary])
}

fn schema_doc(base: &str, id: &str, name: &str, attributes: Vec<Value>) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": id, "name": name, "description": name, "attributes": attributes,
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")}
    })
}

/// The User, Group and enterprise User schemas: the attributes this service keeps.
pub fn schemas(base: &str) -> Vec<Value> {
    let user = vec![
        attr("userName", "string", false, true, "readWrite", "server", false),
        complex(
            "name",
            false,
            vec![string("formatted"), string("familyName"), string("givenName"), string("middleName")],
        ),
        string("displayName"),
        attr("externalId", "string", false, false, "readWrite", "none", true),
        attr("active", "boolean", false, false, "readWrite", "none", false),
        complex(
            "emails",
            true,
            vec![string("value"), string("type"), attr("primary", "boolean", false, false, "readWrite", "none", false)],
        ),
        // What an integration's own endpoint maps onto its role ladder (README "Per-integration
        // endpoints"): Okta's app roles and Entra's appRoleAssignments arrive as these.
        labelled("roles"),
        labelled("entitlements"),
    ];
    let member = {
        let mut value = attr("value", "string", false, false, "immutable", "none", true);
        value["description"] = json!("The id of a member User");
        let mut reference = attr("$ref", "reference", false, false, "immutable", "none", false);
        reference["referenceTypes"] = json!(["User"]);
        let mut kind = attr("type", "string", false, false, "immutable", "none", false);
        kind["canonicalValues"] = json!(["User"]);
        let display = attr("display", "string", false, false, "readOnly", "none", false);
        let mut m = complex("members", true, vec![value, reference, kind, display]);
        m["description"] = json!("The Users in the group");
        m
    };
    let group = vec![
        attr("displayName", "string", false, true, "readWrite", "none", false),
        attr("externalId", "string", false, false, "readWrite", "none", true),
        member,
    ];
    let enterprise = vec![
        string("employeeNumber"),
        string("costCenter"),
        string("organization"),
        string("division"),
        string("department"),
        complex("manager", false, vec![string("value"), string("displayName")]),
    ];
    vec![
        schema_doc(base, USER_SCHEMA, "User", user),
        schema_doc(base, GROUP_SCHEMA, "Group", group),
        schema_doc(base, ENTERPRISE_USER_SCHEMA, "EnterpriseUser", enterprise),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_provider_config_states_capabilities() {
        let c = service_provider_config("https://x/scim/v2");
        assert_eq!(c["patch"]["supported"], true);
        assert_eq!(c["bulk"]["supported"], false);
        assert_eq!(c["filter"]["maxResults"], 200);
        assert_eq!(c["etag"]["supported"], true);
        assert_eq!(c["authenticationSchemes"][0]["type"], "oauthbearertoken");
    }

    #[test]
    fn schemas_have_ids_and_attributes() {
        let s = schemas("b");
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|d| d["id"].is_string() && d["attributes"].as_array().is_some_and(|a| !a.is_empty())));
        assert_eq!(resource_types("b")[0]["endpoint"], "/Users");
    }
}
