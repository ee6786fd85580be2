//! Who may do what, enforced by type.
//!
//! An authenticated [`Principal`] (a user's session or an API key, always inside one
//! organization) does not expose its organization. The only way to reach it is
//! [`Principal::authorize`], which checks the role against a [`Permission`] and returns a
//! [`Granted`] proof; every tenant query and every tenant transaction ([`crate::db::tenant`])
//! takes that proof. A handler that skips the check has no organization id to query with, so it
//! does not compile. The matrix of permissions is [`PERMISSIONS`], rendered in
//! `docs/permissions.md`.

use std::{fmt, marker::PhantomData, str::FromStr};

use uuid::Uuid;

/// The five roles. Each includes everything the roles below it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type, serde::Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Manager,
    Lead,
    Member,
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Manager,
        Role::Lead,
        Role::Member,
        Role::Viewer,
    ];

    fn rank(self) -> u8 {
        match self {
            Self::Admin => 4,
            Self::Manager => 3,
            Self::Lead => 2,
            Self::Member => 1,
            Self::Viewer => 0,
        }
    }

    /// `true` when this role includes `other` (admin ≥ manager ≥ lead ≥ member ≥ viewer).
    pub fn includes(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }

    /// The less powerful of the two.
    pub fn lesser(self, other: Role) -> Role {
        if self.includes(other) { other } else { self }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Manager => "manager",
            Self::Lead => "lead",
            Self::Member => "member",
            Self::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role"))
    }
}

/// One permission: a name for the matrix and the least role that holds it.
pub trait Permission {
    const NAME: &'static str;
    const MIN_ROLE: Role;
}

/// A row of the permission matrix.
#[derive(Debug, Clone, Copy)]
pub struct PermissionInfo {
    pub name: &'static str,
    pub min_role: Role,
    pub description: &'static str,
}

macro_rules! permissions {
    ($($(#[doc = $doc:literal])* $ty:ident = $name:literal, $role:ident;)*) => {
        $(
            $(#[doc = $doc])*
            #[derive(Debug)]
            pub struct $ty;
            impl Permission for $ty {
                const NAME: &'static str = $name;
                const MIN_ROLE: Role = Role::$role;
            }
        )*
        /// The permission matrix, in the order of `docs/permissions.md`.
        pub const PERMISSIONS: &[PermissionInfo] = &[
            $(PermissionInfo {
                name: $name,
                min_role: Role::$role,
                description: concat!($($doc),*),
            },)*
        ];
    };
}

permissions! {
    /// Read one's own account and sessions, sign out, revoke one's own sessions.
    OwnAccount = "account.own", Viewer;
    /// Read the organization's name, branding and settings.
    ReadOrganization = "organization.read", Viewer;
    /// Change the organization's name, branding and settings.
    UpdateOrganization = "organization.update", Admin;
    /// Delete the organization: every session and API key ends at once.
    DeleteOrganization = "organization.delete", Admin;
    /// List the organization's members and their roles.
    ReadMembers = "members.read", Viewer;
    /// Invite people with a role at most the inviter's own.
    InviteMembers = "members.invite", Manager;
    /// Change members' roles and remove members (never the last admin).
    ManageMembers = "members.manage", Admin;
    /// List, create and revoke API keys (with a role at most the creator's own).
    ManageApiKeys = "api_keys.manage", Admin;
    /// Read the audit log.
    ReadAuditLog = "audit_log.read", Admin;
    /// See the organization's sending accounts (never their secrets).
    ReadEmailAccounts = "email_accounts.read", Member;
    /// Connect, change, test and remove sending accounts.
    ManageEmailAccounts = "email_accounts.manage", Manager;
    /// See the team directory.
    ReadTeam = "team.read", Viewer;
    /// Add, change and remove people of the team directory.
    ManageTeam = "team.manage", Manager;
    /// See broadcasts, their deliveries and the suppression list.
    ReadBroadcasts = "broadcasts.read", Member;
    /// Create, send and cancel broadcasts; add to and remove from the suppression list.
    ManageBroadcasts = "broadcasts.manage", Manager;
    /// List jobs, their attempts and errors, and queue statistics.
    ReadJobs = "jobs.read", Viewer;
    /// See jobs' payloads and error texts (recipients, provider replies) and search by a value
    /// in the payload; below it, both are redacted and the search refused.
    ReadJobPayloads = "jobs.read_payloads", Member;
    /// Retry and cancel jobs.
    ManageJobs = "jobs.manage", Lead;
    /// Pause and resume the organization's jobs in a queue.
    ManageQueues = "queues.manage", Admin;
    /// See projects, their members and metrics, tasks, the board and work history.
    ReadProjects = "projects.read", Viewer;
    /// Create, change, archive and delete projects; add and remove their members.
    ManageProjects = "projects.manage", Lead;
    /// Create and change tasks, move them on the board, log work, assign and unassign people.
    WriteTasks = "tasks.write", Member;
    /// Delete tasks with their history.
    DeleteTasks = "tasks.delete", Lead;
    /// See the organization's agents and their schedules.
    ReadAgents = "agents.read", Member;
    /// Create, change and delete custom agents and agent schedules; configure and disable
    /// built-in agents.
    ManageAgents = "agents.manage", Manager;
    /// Start and cancel agent runs. A run acts with its agent's creator's role at run time,
    /// and never with more than the role of whoever started it.
    RunAgents = "agents.run", Member;
    /// See the organization's LLM providers (names, base URLs, default models; never keys).
    ReadLlmCredentials = "llm_credentials.read", Manager;
    /// Add, change, test and remove LLM providers and their keys.
    ManageLlmCredentials = "llm_credentials.manage", Admin;
    /// See approval pipeline templates, running approvals and their steps.
    ReadApprovals = "approvals.read", Member;
    /// Start an approval on an invoice, task or document; cancel one you started (managers:
    /// any).
    StartApprovals = "approvals.start", Member;
    /// Approve or reject the pending step of an approval — only as one of its approvers.
    DecideApprovals = "approvals.decide", Member;
    /// Create, change, archive and delete approval pipeline templates.
    ManageApprovalTemplates = "approval_templates.manage", Manager;
    /// See team members' documents (timesheets, reports, contracts) and download them.
    ReadDocuments = "documents.read", Viewer;
    /// Upload and delete team members' documents.
    ManageDocuments = "documents.manage", Member;
    /// See invoices and download their PDFs (amounts are not for viewers).
    ReadInvoices = "invoices.read", Member;
    /// Create, change, pay, void and delete invoices and attach their PDF; approving and
    /// rejecting belong to approval pipelines.
    ManageInvoices = "invoices.manage", Lead;
    /// See the knowledge base's documents and their indexing, and search the documents one may
    /// read (invoice text only with `invoices.read`, team documents with `documents.read`).
    ReadKnowledge = "knowledge.read", Viewer;
    /// Upload, re-index and delete knowledge base documents.
    ManageKnowledge = "knowledge.manage", Member;
    /// See webhook endpoints (never their signing secrets) and their delivery log.
    ReadWebhooks = "webhooks.read", Manager;
    /// Create, change, test, rotate the secret of and delete webhook endpoints.
    ManageWebhooks = "webhooks.manage", Admin;
    /// The whole installation (every organization's queues and jobs, the platform's jobs,
    /// workers, pausing a queue for everyone): platform operators only, users named by
    /// `ZOARK_OPERATORS` whatever their role; never an API key.
    OperatePlatform = "platform.operate", Viewer;
}

/// Who acts: a user through a login session, or an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    User {
        user_id: Uuid,
        session_id: Uuid,
    },
    ApiKey {
        key_id: Uuid,
    },
    /// An agent's run, acting for the user who created the agent (recorded as that user).
    Agent {
        user_id: Uuid,
        run_id: Uuid,
    },
}

impl Actor {
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Self::User { user_id, .. } | Self::Agent { user_id, .. } => Some(*user_id),
            Self::ApiKey { .. } => None,
        }
    }

    pub fn api_key_id(&self) -> Option<Uuid> {
        match self {
            Self::ApiKey { key_id } => Some(*key_id),
            Self::User { .. } | Self::Agent { .. } => None,
        }
    }
}

/// An authenticated caller inside one organization. Its organization is reachable only
/// through [`Principal::authorize`].
#[derive(Debug, Clone)]
pub struct Principal {
    organization_id: Uuid,
    role: Role,
    actor: Actor,
}

/// A permission the principal's role does not hold.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "this needs the `{permission}` permission, which the {role} role does not have (at least {required})"
)]
pub struct Denied {
    pub permission: &'static str,
    pub role: Role,
    pub required: Role,
}

impl Principal {
    /// The result of authentication. Only the API's authentication (and tests) build these.
    pub fn authenticated(organization_id: Uuid, role: Role, actor: Actor) -> Self {
        Self {
            organization_id,
            role,
            actor,
        }
    }

    /// An agent's run acting for `user_id` with `role`: the role the run holds at run time
    /// (its creator's, and never more than who started it). Only the worker's agent runs build
    /// these.
    pub fn agent_run(organization_id: Uuid, role: Role, user_id: Uuid, run_id: Uuid) -> Self {
        Self {
            organization_id,
            role,
            actor: Actor::Agent { user_id, run_id },
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// Checks `P` against the role: the proof every tenant query needs.
    ///
    /// # Errors
    /// [`Denied`] when the role is below `P::MIN_ROLE`.
    pub fn authorize<P: Permission>(&self) -> Result<Granted<P>, Denied> {
        if self.role.includes(P::MIN_ROLE) {
            Ok(Granted {
                principal: self.clone(),
                permission: PhantomData,
            })
        } else {
            Err(Denied {
                permission: P::NAME,
                role: self.role,
                required: P::MIN_ROLE,
            })
        }
    }
}

/// Proof that a principal holds `P`; the key to its organization's rows.
#[derive(Debug, Clone)]
pub struct Granted<P> {
    principal: Principal,
    permission: PhantomData<fn() -> P>,
}

impl<P> Granted<P> {
    pub fn organization_id(&self) -> Uuid {
        self.principal.organization_id
    }

    pub fn role(&self) -> Role {
        self.principal.role
    }

    pub fn actor(&self) -> Actor {
        self.principal.actor
    }
}

/// Anything that proves access to one organization: what [`crate::db::tenant::begin`] takes.
pub trait TenantProof {
    fn tenant(&self) -> Uuid;
    fn actor(&self) -> Option<Actor>;
}

/// An organization proven otherwise than by a principal's grant: an agent run acting for its
/// agent's creator, the secret token of an inbound email address.
#[derive(Debug, Clone, Copy)]
pub struct ProvenTenant {
    pub organization_id: Uuid,
    pub actor: Option<Actor>,
}

impl TenantProof for ProvenTenant {
    fn tenant(&self) -> Uuid {
        self.organization_id
    }
    fn actor(&self) -> Option<Actor> {
        self.actor
    }
}

impl<P> TenantProof for Granted<P> {
    fn tenant(&self) -> Uuid {
        self.organization_id()
    }
    fn actor(&self) -> Option<Actor> {
        Some(self.principal.actor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role) -> Principal {
        Principal::authenticated(
            Uuid::now_v7(),
            role,
            Actor::ApiKey {
                key_id: Uuid::now_v7(),
            },
        )
    }

    #[test]
    fn roles_include_the_roles_below_them_only() {
        for (i, higher) in Role::ALL.iter().enumerate() {
            for (j, lower) in Role::ALL.iter().enumerate() {
                assert_eq!(higher.includes(*lower), i <= j, "{higher} vs {lower}");
            }
            assert_eq!(higher.as_str().parse::<Role>().unwrap(), *higher);
        }
        assert!("owner".parse::<Role>().is_err());
    }

    #[test]
    fn a_proof_is_granted_from_the_permission_s_least_role_up() {
        assert!(principal(Role::Lead).authorize::<ManageJobs>().is_ok());
        assert!(principal(Role::Admin).authorize::<ManageJobs>().is_ok());
        let denied = principal(Role::Member)
            .authorize::<ManageJobs>()
            .unwrap_err();
        assert_eq!(denied.required, Role::Lead);
        assert!(denied.to_string().contains("jobs.manage"));
        let p = principal(Role::Viewer);
        let granted = p.authorize::<ReadJobs>().unwrap();
        assert_eq!(granted.organization_id(), p.organization_id);
    }

    #[test]
    fn the_matrix_names_each_permission_once() {
        let mut names: Vec<_> = PERMISSIONS.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PERMISSIONS.len());
        assert!(PERMISSIONS.iter().all(|p| !p.description.is_empty()));
    }
}
