//! The operation half of the permission matrix: which permission each operation needs.
//! `docs/permissions.md` is generated from this table and `zoark_core::access::PERMISSIONS`
//! (`cargo xtask openapi`, checked in CI); `tests/tests/access.rs` proves the table is complete
//! and that each operation refuses the role just below its permission.

use std::fmt::Write as _;

use zoark_core::access::{self as a, PERMISSIONS, Permission as _, PermissionInfo, Role};

/// Every operation id of the spec with the permission it needs (`None`: no authentication).
pub const OPERATIONS: &[(&str, Option<&str>)] = &[
    ("health_live", None),
    ("health_ready", None),
    ("metrics", None),
    ("auth_register", None),
    ("auth_login", None),
    ("auth_refresh", None),
    ("auth_password_reset", None),
    ("auth_password_reset_confirm", None),
    ("auth_accept_invitation", None),
    ("auth_verify_email", None),
    ("auth_verify_email_resend", Some(a::OwnAccount::NAME)),
    ("auth_logout", Some(a::OwnAccount::NAME)),
    ("auth_me", Some(a::OwnAccount::NAME)),
    ("auth_sessions_list", Some(a::OwnAccount::NAME)),
    ("auth_sessions_revoke", Some(a::OwnAccount::NAME)),
    ("organization_get", Some(a::ReadOrganization::NAME)),
    ("organization_update", Some(a::UpdateOrganization::NAME)),
    ("organization_delete", Some(a::DeleteOrganization::NAME)),
    ("invitations_create", Some(a::InviteMembers::NAME)),
    ("members_list", Some(a::ReadMembers::NAME)),
    ("members_update", Some(a::ManageMembers::NAME)),
    ("members_remove", Some(a::ManageMembers::NAME)),
    ("api_keys_create", Some(a::ManageApiKeys::NAME)),
    ("api_keys_list", Some(a::ManageApiKeys::NAME)),
    ("api_keys_revoke", Some(a::ManageApiKeys::NAME)),
    ("audit_log_list", Some(a::ReadAuditLog::NAME)),
    ("email_accounts_create", Some(a::ManageEmailAccounts::NAME)),
    (
        "email_accounts_oauth_start",
        Some(a::ManageEmailAccounts::NAME),
    ),
    // The provider's redirect carries no bearer token; the single-use `state` proves the user.
    ("email_accounts_oauth_callback", None),
    (
        "email_accounts_oauth_complete",
        Some(a::ManageEmailAccounts::NAME),
    ),
    ("email_accounts_list", Some(a::ReadEmailAccounts::NAME)),
    ("email_accounts_get", Some(a::ReadEmailAccounts::NAME)),
    ("email_accounts_update", Some(a::ManageEmailAccounts::NAME)),
    ("email_accounts_delete", Some(a::ManageEmailAccounts::NAME)),
    ("email_accounts_test", Some(a::ManageEmailAccounts::NAME)),
    ("team_members_create", Some(a::ManageTeam::NAME)),
    ("team_members_list", Some(a::ReadTeam::NAME)),
    ("team_members_get", Some(a::ReadTeam::NAME)),
    ("team_members_update", Some(a::ManageTeam::NAME)),
    ("team_members_delete", Some(a::ManageTeam::NAME)),
    ("projects_create", Some(a::ManageProjects::NAME)),
    ("projects_list", Some(a::ReadProjects::NAME)),
    ("projects_get", Some(a::ReadProjects::NAME)),
    ("projects_update", Some(a::ManageProjects::NAME)),
    ("projects_delete", Some(a::ManageProjects::NAME)),
    ("project_members_list", Some(a::ReadProjects::NAME)),
    ("project_members_add", Some(a::ManageProjects::NAME)),
    ("project_members_remove", Some(a::ManageProjects::NAME)),
    ("projects_board", Some(a::ReadProjects::NAME)),
    ("tasks_create", Some(a::WriteTasks::NAME)),
    ("tasks_list", Some(a::ReadProjects::NAME)),
    ("tasks_get", Some(a::ReadProjects::NAME)),
    ("tasks_update", Some(a::WriteTasks::NAME)),
    ("tasks_move", Some(a::WriteTasks::NAME)),
    ("tasks_delete", Some(a::DeleteTasks::NAME)),
    ("tasks_history", Some(a::ReadProjects::NAME)),
    ("tasks_log_work", Some(a::WriteTasks::NAME)),
    ("tasks_assign", Some(a::WriteTasks::NAME)),
    ("tasks_unassign", Some(a::WriteTasks::NAME)),
    ("agents_list", Some(a::ReadAgents::NAME)),
    ("agents_get", Some(a::ReadAgents::NAME)),
    ("agents_create", Some(a::ManageAgents::NAME)),
    ("agents_update", Some(a::ManageAgents::NAME)),
    ("agents_delete", Some(a::ManageAgents::NAME)),
    ("agent_tools_list", Some(a::ReadAgents::NAME)),
    ("agent_schedules_create", Some(a::ManageAgents::NAME)),
    ("agent_schedules_list", Some(a::ReadAgents::NAME)),
    ("agent_schedules_get", Some(a::ReadAgents::NAME)),
    ("agent_schedules_update", Some(a::ManageAgents::NAME)),
    ("agent_schedules_delete", Some(a::ManageAgents::NAME)),
    ("agent_runs_create", Some(a::RunAgents::NAME)),
    ("agent_runs_list", Some(a::ReadAgents::NAME)),
    ("agent_runs_get", Some(a::ReadAgents::NAME)),
    ("agent_runs_cancel", Some(a::RunAgents::NAME)),
    ("agent_activity_list", Some(a::ReadAgents::NAME)),
    ("inbound_email_token_create", Some(a::ManageAgents::NAME)),
    // The token in the path is the organization's secret.
    ("inbound_email_receive", None),
    (
        "llm_credentials_create",
        Some(a::ManageLlmCredentials::NAME),
    ),
    ("llm_credentials_list", Some(a::ReadLlmCredentials::NAME)),
    ("llm_credentials_get", Some(a::ReadLlmCredentials::NAME)),
    (
        "llm_credentials_update",
        Some(a::ManageLlmCredentials::NAME),
    ),
    (
        "llm_credentials_delete",
        Some(a::ManageLlmCredentials::NAME),
    ),
    ("llm_credentials_test", Some(a::ManageLlmCredentials::NAME)),
    ("broadcasts_create", Some(a::ManageBroadcasts::NAME)),
    ("broadcasts_list", Some(a::ReadBroadcasts::NAME)),
    ("broadcasts_get", Some(a::ReadBroadcasts::NAME)),
    ("broadcasts_send", Some(a::ManageBroadcasts::NAME)),
    ("broadcasts_cancel", Some(a::ManageBroadcasts::NAME)),
    ("broadcasts_deliveries", Some(a::ReadBroadcasts::NAME)),
    ("suppressions_list", Some(a::ReadBroadcasts::NAME)),
    ("suppressions_create", Some(a::ManageBroadcasts::NAME)),
    ("suppressions_delete", Some(a::ManageBroadcasts::NAME)),
    ("unsubscribe_page", None),
    ("unsubscribe", None),
    ("jobs_list", Some(a::ReadJobs::NAME)),
    ("jobs_get", Some(a::ReadJobs::NAME)),
    ("jobs_retry", Some(a::ManageJobs::NAME)),
    ("jobs_cancel", Some(a::ManageJobs::NAME)),
    ("jobs_bulk_retry", Some(a::ManageJobs::NAME)),
    ("jobs_bulk_cancel", Some(a::ManageJobs::NAME)),
    ("queues_list", Some(a::ReadJobs::NAME)),
    ("queues_pause", Some(a::ManageQueues::NAME)),
    ("queues_resume", Some(a::ManageQueues::NAME)),
    ("platform_queues_list", Some(a::OperatePlatform::NAME)),
    ("platform_queues_pause", Some(a::OperatePlatform::NAME)),
    ("platform_queues_resume", Some(a::OperatePlatform::NAME)),
    ("platform_workers_list", Some(a::OperatePlatform::NAME)),
    ("platform_jobs_get", Some(a::OperatePlatform::NAME)),
    ("platform_jobs_retry", Some(a::OperatePlatform::NAME)),
    ("platform_jobs_cancel", Some(a::OperatePlatform::NAME)),
    (
        "approval_templates_create",
        Some(a::ManageApprovalTemplates::NAME),
    ),
    ("approval_templates_list", Some(a::ReadApprovals::NAME)),
    ("approval_templates_get", Some(a::ReadApprovals::NAME)),
    (
        "approval_templates_update",
        Some(a::ManageApprovalTemplates::NAME),
    ),
    (
        "approval_templates_archive",
        Some(a::ManageApprovalTemplates::NAME),
    ),
    (
        "approval_templates_delete",
        Some(a::ManageApprovalTemplates::NAME),
    ),
    ("approvals_start", Some(a::StartApprovals::NAME)),
    ("approvals_list", Some(a::ReadApprovals::NAME)),
    ("approvals_get", Some(a::ReadApprovals::NAME)),
    ("approvals_approve", Some(a::DecideApprovals::NAME)),
    ("approvals_reject", Some(a::DecideApprovals::NAME)),
    ("approvals_cancel", Some(a::StartApprovals::NAME)),
    ("documents_create", Some(a::ManageDocuments::NAME)),
    ("documents_list", Some(a::ReadDocuments::NAME)),
    ("documents_get", Some(a::ReadDocuments::NAME)),
    ("documents_download", Some(a::ReadDocuments::NAME)),
    ("documents_delete", Some(a::ManageDocuments::NAME)),
    ("invoices_create", Some(a::ManageInvoices::NAME)),
    ("invoices_list", Some(a::ReadInvoices::NAME)),
    ("invoices_get", Some(a::ReadInvoices::NAME)),
    ("invoices_update", Some(a::ManageInvoices::NAME)),
    ("invoices_delete", Some(a::ManageInvoices::NAME)),
    ("invoices_pdf_put", Some(a::ManageInvoices::NAME)),
    ("invoices_pdf_get", Some(a::ReadInvoices::NAME)),
    ("knowledge_create", Some(a::ManageKnowledge::NAME)),
    ("knowledge_list", Some(a::ReadKnowledge::NAME)),
    ("knowledge_get", Some(a::ReadKnowledge::NAME)),
    ("knowledge_reindex", Some(a::ManageKnowledge::NAME)),
    ("knowledge_delete", Some(a::ManageKnowledge::NAME)),
    ("search", Some(a::ReadKnowledge::NAME)),
    ("ask", Some(a::RunAgents::NAME)),
    ("webhooks_create", Some(a::ManageWebhooks::NAME)),
    ("webhooks_list", Some(a::ReadWebhooks::NAME)),
    ("webhooks_get", Some(a::ReadWebhooks::NAME)),
    ("webhooks_update", Some(a::ManageWebhooks::NAME)),
    ("webhooks_delete", Some(a::ManageWebhooks::NAME)),
    ("webhooks_rotate_secret", Some(a::ManageWebhooks::NAME)),
    ("webhooks_test", Some(a::ManageWebhooks::NAME)),
    ("webhooks_deliveries", Some(a::ReadWebhooks::NAME)),
];

/// The matrix row of a permission name.
pub fn permission(name: &str) -> Option<&'static PermissionInfo> {
    PERMISSIONS.iter().find(|p| p.name == name)
}

/// The least role an operation needs; `None` for public operations or unknown ids.
pub fn least_role(operation_id: &str) -> Option<Role> {
    OPERATIONS
        .iter()
        .find(|(id, _)| *id == operation_id)
        .and_then(|(_, p)| permission((*p)?))
        .map(|p| p.min_role)
}

/// `docs/permissions.md`.
pub fn markdown() -> String {
    let spec: serde_json::Value =
        serde_json::from_str(&crate::spec_json()).unwrap_or(serde_json::Value::Null);
    let mut routes = std::collections::HashMap::new();
    if let Some(paths) = spec["paths"].as_object() {
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().into_iter().flatten() {
                if let Some(id) = operation["operationId"].as_str() {
                    routes.insert(id.to_owned(), format!("{} {path}", method.to_uppercase()));
                }
            }
        }
    }
    let mut out = String::from(
        "# Permissions\n\n\
         <!-- Generated by `cargo xtask openapi` from `core/src/access.rs` and \
         `api/src/permissions.rs`; CI fails when it is stale. -->\n\n\
         Five roles, each holding everything the roles below it hold: \
         `admin` > `manager` > `lead` > `member` > `viewer`. API keys carry a role too (at most \
         their creator's).\n\n\
         Enforced by type: a tenant query needs a `Granted<Permission>` proof, and the only way to \
         get one is `Principal::authorize::<Permission>()`, which checks the role. Row-level \
         security, set from the same proof, is the second wall.\n\n\
         ## Roles\n\n| permission | admin | manager | lead | member | viewer | |\n\
         |---|:-:|:-:|:-:|:-:|:-:|---|\n",
    );
    for p in PERMISSIONS {
        let marks: Vec<&str> = Role::ALL
            .iter()
            .map(|r| if r.includes(p.min_role) { "✓" } else { "" })
            .collect();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            p.name,
            marks.join(" | "),
            p.description.trim()
        );
    }
    out.push_str(
        "\n## Operations\n\n| operation | route | permission | least role |\n|---|---|---|---|\n",
    );
    for (id, name) in OPERATIONS {
        let route = routes.get(*id).map(String::as_str).unwrap_or("?");
        let (permission, role) = match name.and_then(permission) {
            Some(p) => (format!("`{}`", p.name), p.min_role.to_string()),
            None => ("—".to_owned(), "none (public)".to_owned()),
        };
        let _ = writeln!(out, "| `{id}` | `{route}` | {permission} | {role} |");
    }
    out
}
