//! Builders for the scheduler calls the framework sends. Each makes the same
//! bytes Mesos' own library makes for the same request (tests compare them
//! with recorded calls), and the rules of the protocol live here once: an
//! update is acknowledged only if it carries a uuid; implicit reconciliation
//! sends an empty `reconcile` rather than none; a re-subscription names the
//! framework id twice.

use crate::mesos::scheduler::call::{self, Acknowledge, Decline, Kill, Reconcile, Subscribe};
use crate::mesos::{
    framework_info, AgentId, Filters, FrameworkId, FrameworkInfo, OfferId, TaskId, TaskState,
    TaskStatus,
};
use crate::Call;

/// Who the framework is, as SUBSCRIBE tells the master.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkSettings {
    /// Set after the first subscription: re-subscribing with it keeps the tasks.
    pub id: Option<String>,
    pub user: String,
    pub name: String,
    pub hostname: Option<String>,
    pub webui_url: Option<String>,
    pub failover_timeout: f64,
    /// The role offers come for. With `multi_role` it goes in `roles` (and
    /// the MULTI_ROLE capability), else in the deprecated `role`.
    pub role: Option<String>,
    pub multi_role: bool,
    /// Agents checkpoint the tasks, so that they survive an agent restart.
    /// Mesos keeps the value of the first subscription.
    pub checkpoint: bool,
    /// The principal the framework authenticates as (also checked by ACLs).
    pub principal: Option<String>,
    /// GPU_RESOURCES: without it a master with `--filter_gpu_resources`
    /// (the default) offers no agent that has GPUs.
    pub gpus: bool,
}

impl FrameworkSettings {
    /// A framework with these names and no options set.
    pub fn new(user: &str, name: &str) -> FrameworkSettings {
        FrameworkSettings {
            id: None,
            user: user.into(),
            name: name.into(),
            hostname: None,
            webui_url: None,
            failover_timeout: 0.0,
            role: None,
            multi_role: false,
            checkpoint: false,
            principal: None,
            gpus: false,
        }
    }
}

fn fw(id: &str) -> Option<FrameworkId> {
    Some(FrameworkId {
        value: id.to_string(),
    })
}

fn base(framework_id: Option<&str>, kind: call::Type) -> Call {
    Call {
        framework_id: framework_id.and_then(fw),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

pub fn subscribe(s: &FrameworkSettings) -> Call {
    use framework_info::capability::Type as Cap;
    let mut caps = vec![Cap::PartitionAware, Cap::TaskKillingState];
    if s.multi_role {
        caps.push(Cap::MultiRole);
    }
    if s.gpus {
        caps.push(Cap::GpuResources);
    }
    let capabilities = caps
        .into_iter()
        .map(|t| framework_info::Capability {
            r#type: Some(t as i32),
        })
        .collect();
    let (role, roles) = match (&s.role, s.multi_role) {
        (Some(r), true) => (None, vec![r.clone()]),
        (None, true) => (None, vec!["*".to_string()]),
        (r, false) => (r.clone(), vec![]),
    };
    let info = FrameworkInfo {
        user: s.user.clone(),
        name: s.name.clone(),
        id: s.id.as_deref().and_then(fw),
        failover_timeout: Some(s.failover_timeout),
        checkpoint: s.checkpoint.then_some(true),
        role,
        roles,
        hostname: s.hostname.clone(),
        principal: s.principal.clone(),
        webui_url: s.webui_url.clone(),
        capabilities,
        ..Default::default()
    };
    Call {
        subscribe: Some(Subscribe {
            framework_info: info,
        }),
        ..base(s.id.as_deref(), call::Type::Subscribe)
    }
}

pub fn decline(framework_id: &str, offer_ids: &[&str], refuse_seconds: f64) -> Call {
    let decline = Decline {
        offer_ids: offer_ids
            .iter()
            .map(|o| OfferId {
                value: o.to_string(),
            })
            .collect(),
        filters: Some(Filters {
            refuse_seconds: Some(refuse_seconds),
        }),
    };
    Call {
        decline: Some(decline),
        ..base(Some(framework_id), call::Type::Decline)
    }
}

/// The ACKNOWLEDGE for an update, or None when it must not be acknowledged
/// (updates without a uuid, such as reconciliation answers).
pub fn acknowledge(framework_id: &str, status: &TaskStatus) -> Option<Call> {
    let uuid = status.uuid.clone()?;
    let agent_id = status.agent_id.clone()?;
    let ack = Acknowledge {
        agent_id,
        task_id: status.task_id.clone(),
        uuid,
    };
    Some(Call {
        acknowledge: Some(ack),
        ..base(Some(framework_id), call::Type::Acknowledge)
    })
}

pub fn kill(framework_id: &str, task_id: &str, agent_id: Option<&str>) -> Call {
    let kill = Kill {
        task_id: TaskId {
            value: task_id.to_string(),
        },
        agent_id: agent_id.map(|a| AgentId {
            value: a.to_string(),
        }),
        kill_policy: None,
    };
    Call {
        kill: Some(kill),
        ..base(Some(framework_id), call::Type::Kill)
    }
}

/// Explicit reconciliation of these tasks, or implicit (all tasks) when empty.
pub fn reconcile(framework_id: &str, tasks: &[(&str, Option<&str>)]) -> Call {
    let tasks = tasks
        .iter()
        .map(|(t, a)| call::reconcile::Task {
            task_id: TaskId {
                value: t.to_string(),
            },
            agent_id: a.map(|a| AgentId {
                value: a.to_string(),
            }),
        })
        .collect();
    Call {
        reconcile: Some(Reconcile { tasks }),
        ..base(Some(framework_id), call::Type::Reconcile)
    }
}

pub fn suppress(framework_id: &str) -> Call {
    base(Some(framework_id), call::Type::Suppress)
}

pub fn revive(framework_id: &str) -> Call {
    base(Some(framework_id), call::Type::Revive)
}

pub fn teardown(framework_id: &str) -> Call {
    base(Some(framework_id), call::Type::Teardown)
}

/// True for the states Mesos marks TERMINAL. TASK_LOST, TASK_UNREACHABLE,
/// TASK_GONE_BY_OPERATOR and TASK_UNKNOWN are not: the task may still run
/// (a partitioned agent can come back), which the framework has to decide.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskError
            | TaskState::TaskDropped
            | TaskState::TaskGone
    )
}
