//! `unseat`: one binary, one subcommand per role. See README.md for the two commands that run
//! it and its tests; `unseat --help` for every flag and its `UNSEAT_*` variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use unseat::{Roles, Settings};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "unseat", version, about = "Takes people out of the apps they should no longer be in")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// PostgreSQL URL, for every command but `emulate` and `probe`; `migrate` and the roles
    /// create the database if it is missing.
    #[arg(
        long,
        global = true,
        env = "UNSEAT_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/unseat"
    )]
    database_url: String,
    /// RabbitMQ URL.
    #[arg(long, global = true, env = "UNSEAT_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Prefix of every exchange and queue name.
    #[arg(long, global = true, env = "UNSEAT_AMQP_PREFIX", default_value = "unseat")]
    amqp_prefix: String,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, global = true, env = "UNSEAT_LOG", default_value = "info")]
    log: String,
    /// Log line format on stderr: `text` for people, `json` (one object per line) for a log
    /// pipeline.
    #[arg(long, global = true, env = "UNSEAT_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Key of app credentials at rest (64 hex digits): the console encrypts submitted secrets
    /// under it, connectors decrypt them. Without it the console refuses plain secrets.
    #[arg(long, global = true, env = "UNSEAT_CREDENTIAL_KEY", hide_env_values = true, value_parser = credential_key)]
    credential_key: Option<unseat_store::credentials::CredentialKey>,
    /// Without a credential key, store plain app credentials as submitted (development only).
    #[arg(long, global = true, env = "UNSEAT_ALLOW_PLAINTEXT_CREDENTIALS")]
    allow_plaintext_credentials: bool,
}

fn credential_key(value: &str) -> Result<unseat_store::credentials::CredentialKey, String> {
    unseat_store::credentials::CredentialKey::parse(value).map_err(|e| e.to_string())
}

#[derive(Args, Clone)]
struct Workers {
    /// Deliveries a resolver holds at once.
    #[arg(
        help_heading = "Resolver (resolver, all, demo)",
        long,
        env = "UNSEAT_RESOLVER_PREFETCH",
        default_value_t = 8
    )]
    resolver_prefetch: u16,
    /// Deliveries a connector holds (and works on) at once.
    #[arg(
        help_heading = "Connector (connector, all, demo)",
        long,
        env = "UNSEAT_CONNECTOR_PREFETCH",
        default_value_t = 16
    )]
    connector_prefetch: u16,
    /// Tasks a connector pool (one per app kind) calls its app with at once.
    #[arg(
        help_heading = "Connector (connector, all, demo)",
        long,
        env = "UNSEAT_CONNECTOR_CONCURRENCY",
        default_value_t = 16
    )]
    connector_concurrency: usize,
    /// App API attempts per task before it fails and is dead-lettered (waits between them grow
    /// from 0.2 s to at most 5 minutes: the default rides out an outage of several minutes).
    #[arg(
        help_heading = "Connector (connector, all, demo)",
        long,
        visible_alias = "connector-max-attempts",
        env = "UNSEAT_CONNECTOR_MAX_ATTEMPTS",
        default_value_t = 14
    )]
    max_attempts: u32,
    /// Seconds a connector waits at least after an app throttled an attempt (HTTP 429, Graph
    /// throttling codes), doubling with each throttle in a row up to 16 times; such attempts
    /// do not count against the attempt budget.
    #[arg(
        help_heading = "Connector (connector, all, demo)",
        long,
        visible_alias = "connector-throttle-wait-seconds",
        env = "UNSEAT_CONNECTOR_THROTTLE_WAIT_SECONDS",
        default_value_t = 60
    )]
    throttle_wait_seconds: u64,
    /// Attempts of one integration failing in a row (timeouts, refused connections, server
    /// errors) after which a connector lets one of its tasks at a time call the app and holds
    /// the others back, so that an app that is down does not take every slot of its app kind;
    /// 0 never holds tasks back.
    #[arg(
        help_heading = "Connector (connector, all, demo)",
        long,
        env = "UNSEAT_CONNECTOR_HOLD_BACK_AFTER",
        default_value_t = 5
    )]
    connector_hold_back_after: u32,
    /// Connectors call apps only at public addresses (not loopback, private, link-local…):
    /// for tenants not trusted with the network unseat runs in.
    #[arg(help_heading = "Connector (connector, all, demo)", long, env = "UNSEAT_CONNECTOR_PUBLIC_ONLY")]
    connector_public_only: bool,
    /// Seconds in-flight work may take to finish after SIGTERM.
    #[arg(help_heading = "Every role", long, env = "UNSEAT_GRACE_SECONDS", default_value_t = 30)]
    grace_seconds: u64,
    /// Seconds HTTP goes on after SIGTERM at the least, /readyz answering 503 `draining`, so a
    /// load balancer stops sending requests before the port closes (an ingest or console with
    /// nothing in flight would otherwise close it at once).
    #[arg(help_heading = "Every role", long, env = "UNSEAT_DRAIN_SECONDS", default_value_t = 0)]
    drain_seconds: u64,
    /// Largest SCIM request body, in bytes.
    #[arg(help_heading = "SCIM ingest (ingest, all, demo)", long, env = "UNSEAT_BODY_LIMIT", default_value_t = 1024 * 1024)]
    body_limit: usize,
    /// SCIM requests per second one tenant may make, across every ingest process on the
    /// database (0: unlimited), unless the operator gave the tenant a rate of its own
    /// (PUT /api/v1/tenants/{t}/scim-rate-limit).
    #[arg(
        help_heading = "SCIM ingest (ingest, all, demo)",
        long,
        env = "UNSEAT_SCIM_RATE_LIMIT",
        default_value_t = 5000
    )]
    scim_rate_limit: u32,
    /// SCIM requests a tenant may make at once above that rate.
    #[arg(
        help_heading = "SCIM ingest (ingest, all, demo)",
        long,
        env = "UNSEAT_SCIM_RATE_BURST",
        default_value_t = 10_000
    )]
    scim_rate_burst: u32,
    /// PostgreSQL connections per process.
    #[arg(help_heading = "Every role", long, env = "UNSEAT_DB_POOL", default_value_t = 32)]
    db_pool: usize,
    /// Serve /metrics (and /healthz) on this address instead of --listen: keeps the fleet's
    /// figures off the port IdPs reach.
    #[arg(help_heading = "Every role", long, env = "UNSEAT_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Seconds a published outbox row is kept (marked sent) to look a message up; 0 deletes it
    /// once the broker confirmed it.
    #[arg(help_heading = "Every role", long, env = "UNSEAT_OUTBOX_KEEP_SECONDS", default_value_t = 0)]
    outbox_keep_seconds: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if missing and apply migrations.
    Migrate,
    /// SCIM 2.0 service provider (+ outbox relay), on /scim/v2.
    Ingest {
        /// Address of its HTTP server (/metrics, /healthz, /readyz, and /scim/v2).
        #[arg(long, env = "UNSEAT_INGEST_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        workers: Workers,
    },
    /// Resolver workers (+ outbox relay); /metrics and /healthz on --listen.
    Resolver {
        /// Address of its HTTP server (/metrics, /healthz, /readyz).
        #[arg(long, env = "UNSEAT_RESOLVER_LISTEN", default_value = "127.0.0.1:9101")]
        listen: SocketAddr,
        #[command(flatten)]
        workers: Workers,
    },
    /// Connector workers for every app kind; /metrics and /healthz on --listen.
    Connector {
        /// Address of its HTTP server (/metrics, /healthz, /readyz).
        #[arg(long, env = "UNSEAT_CONNECTOR_LISTEN", default_value = "127.0.0.1:9102")]
        listen: SocketAddr,
        #[command(flatten)]
        workers: Workers,
    },
    /// Admin API (+ outbox relay), on /api/v1.
    Console {
        /// Address of its HTTP server (/metrics, /healthz, /readyz, and /api/v1).
        #[arg(long, env = "UNSEAT_CONSOLE_LISTEN", default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Operator token: may create tenants and act on every tenant.
        #[arg(long, env = "UNSEAT_ADMIN_TOKEN")]
        admin_token: Option<String>,
        #[command(flatten)]
        workers: Workers,
    },
    /// Every role in one process, on one HTTP port.
    All {
        /// Address of its HTTP server (/metrics, /healthz, /readyz, /scim/v2 and /api/v1).
        #[arg(long, env = "UNSEAT_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Operator token: may create tenants and act on every tenant.
        #[arg(long, env = "UNSEAT_ADMIN_TOKEN")]
        admin_token: Option<String>,
        #[command(flatten)]
        workers: Workers,
    },
    /// The app emulators (a Meta-style business hub and a SCIM 2.0 app), with control
    /// endpoints under /_emulator/.
    Emulate {
        /// Address of its HTTP server (the apps' APIs and /_emulator/).
        #[arg(long, env = "UNSEAT_EMULATOR_LISTEN", default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
    },
    /// Everything plus the emulator and a seeded demo tenant; prints how to try it.
    Demo {
        /// unseat listens on this port, the emulator on the next one.
        #[arg(long, env = "UNSEAT_DEMO_PORT_BASE", default_value_t = 8080)]
        port_base: u16,
        /// Operator token; a new one is made (and printed) when none is given.
        #[arg(long, env = "UNSEAT_ADMIN_TOKEN")]
        admin_token: Option<String>,
        #[command(flatten)]
        workers: Workers,
    },
    /// Benchmarks (print figures, assert nothing).
    #[command(subcommand)]
    Bench(unseat::bench::BenchCommand),
    /// Operator tools: list and re-drive failed tasks, encrypt an app credential.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Healthcheck: GETs a local http:// URL, exits 0 on a 2xx answer, else 1 saying why.
    ///
    /// For a container image without curl: `unseat probe http://127.0.0.1:9101/readyz` asks
    /// the role in this container whether it can work. Redirects are not followed and no proxy
    /// is used; the one line printed (stdout on success, stderr on failure) is what Docker
    /// keeps in the container's health log.
    Probe {
        /// What to GET: a role's /readyz (ready to work) or /healthz (running).
        url: String,
        /// Seconds the whole exchange may take.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
        timeout_seconds: u64,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Failed (and dead-lettered) tasks, newest first.
    Failed {
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
        #[arg(long)]
        integration: Option<uuid::Uuid>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Queue failed tasks again for their current desired state: one (--task) or every failed
    /// task of an integration (--integration). A running relay (any role but connector)
    /// publishes them.
    Redrive {
        #[arg(long)]
        tenant: uuid::Uuid,
        #[arg(long, conflicts_with = "integration", required_unless_present = "integration")]
        task: Option<uuid::Uuid>,
        #[arg(long)]
        integration: Option<uuid::Uuid>,
    },
    /// Gives a tenant a SCIM request rate of its own in place of UNSEAT_SCIM_RATE_LIMIT /
    /// _BURST (--per-second and --burst), or the fleet's again (--fleet); every ingest process
    /// applies it from its next lease. Without either, prints the tenant's.
    ScimRateLimit {
        #[arg(long)]
        tenant: uuid::Uuid,
        #[arg(long, requires = "burst", conflicts_with = "fleet")]
        per_second: Option<i64>,
        #[arg(long, requires = "per_second", conflicts_with = "fleet")]
        burst: Option<i64>,
        #[arg(long)]
        fleet: bool,
    },
    /// Lists users of one directory whose userNames are the same ignoring case, told apart only
    /// before an upgrade to migration 19: an IdP takes them for one user, so it never
    /// deprovisions the later ones. Merge or delete them.
    CaseDuplicates,
    /// Reads a secret from stdin and prints it encrypted under UNSEAT_CREDENTIAL_KEY, ready to
    /// store as an integration's credential.
    EncryptCredential,
    /// Deletes the deployment's queues and exchanges on the broker (UNSEAT_AMQP_PREFIX),
    /// messages included: for tearing a deployment down. Stop every role first.
    DeleteTopology {
        /// The prefix whose queues and exchanges go, the same as --amqp-prefix /
        /// UNSEAT_AMQP_PREFIX: typed out so that a forgotten setting cannot delete the default
        /// deployment's queues.
        #[arg(long)]
        prefix: String,
        /// Required: the messages in those queues are lost.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs an `unseat admin` command against the database directly.
async fn admin(c: &Common, command: AdminCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    if let AdminCommand::EncryptCredential = command {
        let key = c.credential_key.as_ref().with_context(|| {
            format!("give --credential-key or set {} (64 hex digits)", unseat_connector::credentials::KEY_VAR)
        })?;
        let mut secret = String::new();
        std::io::stdin().read_line(&mut secret)?;
        let secret = secret.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!secret.is_empty(), "no secret on stdin");
        println!("{}", unseat_connector::credentials::encrypt(secret, key.hex())?);
        return Ok(());
    }
    if let AdminCommand::DeleteTopology { yes, prefix } = command {
        // The prefix is named on purpose, not taken from a default or a forgotten variable.
        anyhow::ensure!(
            prefix == c.amqp_prefix,
            "--prefix {prefix:?} is not the deployment's prefix {:?} (--amqp-prefix or UNSEAT_AMQP_PREFIX): name the \
             prefix whose queues to delete in both",
            c.amqp_prefix
        );
        anyhow::ensure!(yes, "this deletes every queue of prefix {:?}, messages included: pass --yes", c.amqp_prefix);
        let s = settings(c, SocketAddr::from(([127, 0, 0, 1], 0)), None, &Workers::default_for_bench());
        let topology = s.topology();
        topology.delete_at(&s.amqp_url, "admin").await.context("deleting the topology")?;
        println!("deleted the queues and exchanges of prefix {:?} (those that were there)", c.amqp_prefix);
        return Ok(());
    }
    // Never create or migrate here: a mistyped URL must not answer from a fresh database, and
    // a newer build must not migrate the fleet's database ahead of it.
    unseat_store::migrate::check_current(&c.database_url).await?;
    let store = unseat_store::Store::connect(&c.database_url, 2)?;
    match command {
        AdminCommand::Failed { tenant, integration, limit } => {
            let tasks = store.failed_tasks(tenant, integration, limit.clamp(1, 10_000)).await?;
            for t in &tasks {
                println!(
                    "{}  tenant {}  {} ({})  {}  {}  attempts {}{}{}  {}",
                    t.id,
                    t.tenant_id,
                    t.integration_name,
                    t.integration_id,
                    t.user_email,
                    t.outcome,
                    t.attempts,
                    if t.dead_lettered { "  dead-lettered" } else { "" },
                    if t.redriven > 0 { format!("  re-driven {}x", t.redriven) } else { String::new() },
                    t.last_error.as_deref().unwrap_or("")
                );
            }
            // The count is of the rows shown: at the limit there may be more.
            if tasks.len() as i64 >= limit.clamp(1, 10_000) {
                println!("{} failed task(s) shown, the --limit: there may be more", tasks.len());
            } else {
                println!("{} failed task(s)", tasks.len());
            }
        }
        AdminCommand::Redrive { tenant, task, integration } => {
            let ids: Vec<uuid::Uuid> = match (task, integration) {
                (Some(task), _) => vec![task],
                (None, Some(i)) => {
                    // "0 queued" for a mistyped or deleted integration would read as nothing to do.
                    anyhow::ensure!(
                        store.integration(tenant, i).await?.is_some(),
                        "tenant {tenant} has no integration {i} (a deleted integration's tasks cannot be re-driven)"
                    );
                    store.failed_tasks(Some(tenant), Some(i), 100_000).await?.into_iter().map(|t| t.id).collect()
                }
                (None, None) => anyhow::bail!("give --task or --integration"),
            };
            let exchange = unseat_bus::Topology::new(c.amqp_prefix.clone(), Vec::new()).connector_exchange();
            // Every failed task of an integration: one that is no longer failed by its turn was
            // taken care of meanwhile (a task re-driven here for the same user succeeded and
            // superseded it, or someone else re-drove it), which is no failure of the command.
            let batch = task.is_none();
            let (mut queued, mut covered, mut refused) = (0, 0, 0);
            for id in ids {
                let outcome = store
                    .redrive_task(tenant, id, "the operator (unseat admin)", |t| {
                        unseat_console::redrive_message(t, &exchange)
                    })
                    .await?;
                use unseat_store::apply::Redrive;
                let (said, counted) = match outcome {
                    Redrive::Requeued { desired_version } => {
                        (format!("queued again for desired version {desired_version}"), &mut queued)
                    }
                    Redrive::NotFailed { status } => (
                        format!("not re-driven: only failed tasks are, and it is {status}"),
                        if batch { &mut covered } else { &mut refused },
                    ),
                    Redrive::NoDesiredState => {
                        ("not re-driven: its integration or desired state no longer exists".into(), &mut refused)
                    }
                    Redrive::NoSuchTask => (format!("not re-driven: tenant {tenant} has no such task"), &mut refused),
                    Redrive::Outdated { applied_version } => (
                        format!(
                            "not re-driven: a later task applied version {applied_version} of this user's access; \
                             marked superseded"
                        ),
                        if batch { &mut covered } else { &mut refused },
                    ),
                };
                *counted += 1;
                println!("{id}: {said}");
            }
            println!("{queued} task(s) queued again");
            if covered > 0 {
                println!("{covered} task(s) no longer failed by their turn: a later task took care of them");
            }
            anyhow::ensure!(refused == 0, "{refused} task(s) not re-driven (see above)");
        }
        AdminCommand::ScimRateLimit { tenant, per_second, burst, fleet } => {
            let set = match (per_second.zip(burst), fleet) {
                (Some((per_second, burst)), _) => {
                    Some(Some(unseat_store::admin::ScimRateLimit::new(per_second, burst).map_err(anyhow::Error::msg)?))
                }
                (None, true) => Some(None),
                (None, false) => None,
            };
            if let Some(limit) = set {
                anyhow::ensure!(store.set_scim_rate_limit(tenant, limit).await?, "no tenant {tenant}");
            }
            let now = store.tenant(tenant).await?.with_context(|| format!("no tenant {tenant}"))?;
            match now.scim_rate_limit {
                Some(l) => {
                    println!("tenant {tenant}: its own SCIM rate, {} requests/s, burst {}", l.per_second, l.burst)
                }
                None => println!("tenant {tenant}: the fleet's SCIM rate (UNSEAT_SCIM_RATE_LIMIT / _BURST)"),
            }
        }
        AdminCommand::CaseDuplicates => {
            let sets = store.case_duplicates().await?;
            for set in &sets {
                println!("tenant {}  directory {}  userName {:?} ignoring case:", set.tenant_id, set.scope, set.key);
                for (i, u) in set.users.iter().enumerate() {
                    println!(
                        "  {}  {:?}  {}  created {}{}",
                        u.id,
                        u.user_name,
                        if u.active { "active" } else { "inactive" },
                        u.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
                        if i == 0 { "  (found by lookups of the name)" } else { "" }
                    );
                }
            }
            println!("{} userName(s) held by more than one user", sets.len());
        }
        AdminCommand::EncryptCredential | AdminCommand::DeleteTopology { .. } => {}
    }
    Ok(())
}

/// `unseat probe`: one GET of `url`, redirects not followed and no proxy asked (the URL is
/// local); the status and the answer's first line when it is 2xx, else why not, in one line.
async fn probe(url: &str, timeout: Duration) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: not a URL: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("{url}: only http:// URLs are probed"));
    }
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("{url}: {e}"))?;
    let mut resp = http.get(parsed).send().await.map_err(|e| format!("{url}: {}", request_failure(&e, timeout)))?;
    let status = resp.status();
    // The first line of the answer says why a role is not ready; no more is read.
    let mut body = Vec::new();
    while body.len() < 1024 {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) if status.is_success() => {
                return Err(format!("{url}: HTTP {status}, then {}", request_failure(&e, timeout)))
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let line: String = text.lines().next().unwrap_or("").trim().chars().take(200).collect();
    let said = if line.is_empty() { format!("{url}: HTTP {status}") } else { format!("{url}: HTTP {status}: {line}") };
    if status.is_success() {
        Ok(said)
    } else {
        Err(said)
    }
}

/// Why a request got no answer, in words: a timeout, a refused connection (with the system's
/// reason), or the error's causes.
fn request_failure(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs());
    }
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if e.is_connect() {
        let deepest = causes.last().cloned().unwrap_or_else(|| e.to_string());
        return format!("cannot connect: {deepest}");
    }
    causes.dedup();
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

fn settings(common: &Common, listen: SocketAddr, admin_token: Option<String>, w: &Workers) -> Settings {
    let mut s = Settings::new(&common.database_url, &common.amqp_url);
    s.amqp_prefix = common.amqp_prefix.clone();
    s.listen = listen;
    s.admin_token = admin_token;
    s.body_limit = w.body_limit;
    s.scim_rate_limit = w.scim_rate_limit;
    s.scim_rate_burst = w.scim_rate_burst;
    s.pool_size = w.db_pool;
    s.metrics_listen = w.metrics_listen;
    s.outbox_keep_sent = Duration::from_secs(w.outbox_keep_seconds);
    s.drain_delay = Duration::from_secs(w.drain_seconds);
    s.credential_key = common.credential_key.clone();
    s.allow_plaintext_credentials = common.allow_plaintext_credentials;
    s.resolver.prefetch = w.resolver_prefetch;
    s.resolver.grace = Duration::from_secs(w.grace_seconds);
    s.connector.prefetch = w.connector_prefetch;
    s.connector.concurrency = w.connector_concurrency;
    s.connector.max_attempts = w.max_attempts;
    s.connector.throttle_wait = Duration::from_secs(w.throttle_wait_seconds);
    s.connector.public_only = w.connector_public_only;
    s.connector.hold_back_after = w.connector_hold_back_after;
    s.connector.grace = Duration::from_secs(w.grace_seconds);
    s
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The log filter `given` (tracing's EnvFilter syntax; empty for `info`), refused when it does
/// not parse, so that a mistyped filter is not silently replaced. tokio_postgres logs query
/// parameters at debug, and a stored credential is a parameter: unless the filter names it on
/// purpose it is held at info at most (a filter of `warn` keeps it at warn).
fn log_filter(given: &str) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    let given = if given.trim().is_empty() { "info" } else { given };
    let mut filter = tracing_subscriber::EnvFilter::try_new(given)
        .map_err(|e| anyhow::anyhow!("UNSEAT_LOG / --log {given:?} is not a log filter: {e}"))?;
    if !given.contains("tokio_postgres") {
        let ceiling = match filter.max_level_hint() {
            Some(level) if level < tracing_subscriber::filter::LevelFilter::INFO => level.to_string(),
            _ => "info".to_string(),
        };
        filter = filter.add_directive(format!("tokio_postgres={ceiling}").parse()?);
    }
    Ok(filter)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // tokio_postgres logs query parameters at debug, and a stored credential is a parameter:
    // it stays at info unless the filter names it on purpose.
    let filter = log_filter(&cli.common.log)?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.common.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    let shutdown = CancellationToken::new();
    unseat_telemetry::cancel_on_signal(shutdown.clone());
    let c = &cli.common;
    let (settings, roles) = match cli.command {
        Command::Migrate => {
            let applied = unseat_store::migrate::migrate(&c.database_url).await?;
            println!("database ready; migrations applied now: {applied:?}");
            return Ok(());
        }
        Command::Emulate { listen } => {
            let tasks = tokio_util::task::TaskTracker::new();
            let (addr, _) = unseat::start_emulator(listen, &tasks, shutdown.clone()).await?;
            println!("EMULATOR_URL=http://{addr}");
            tasks.close();
            tasks.wait().await;
            return Ok(());
        }
        Command::Demo { port_base, admin_token, workers } => {
            let mut s = settings(c, SocketAddr::from(([127, 0, 0, 1], port_base)), admin_token, &workers);
            if s.credential_key.is_none() && !s.allow_plaintext_credentials {
                // Everything runs in this one process: a throwaway key still keeps the demo's
                // credentials encrypted at rest.
                tracing::info!("no UNSEAT_CREDENTIAL_KEY: the demo encrypts credentials under a key made for this run");
                s.credential_key = Some(unseat_store::credentials::CredentialKey::generate());
            }
            unseat::demo::run(s, port_base, shutdown).await?;
            tracing::info!("stopped");
            return Ok(());
        }
        Command::Admin(command) => return admin(c, command).await,
        Command::Probe { url, timeout_seconds } => match probe(&url, Duration::from_secs(timeout_seconds)).await {
            Ok(said) => {
                println!("{said}");
                return Ok(());
            }
            Err(why) => {
                eprintln!("{why}");
                std::process::exit(1);
            }
        },
        Command::Bench(command) => {
            let mut s = settings(c, SocketAddr::from(([127, 0, 0, 1], 0)), None, &Workers::default_for_bench());
            s.credential_key = s.credential_key.or_else(|| Some(unseat_store::credentials::CredentialKey::generate()));
            return unseat::bench::run(s, command).await;
        }
        Command::Ingest { listen, workers } => {
            (settings(c, listen, None, &workers), Roles { ingest: true, ..Default::default() })
        }
        Command::Resolver { listen, workers } => {
            (settings(c, listen, None, &workers), Roles { resolver: true, ..Default::default() })
        }
        Command::Connector { listen, workers } => {
            (settings(c, listen, None, &workers), Roles { connector: true, ..Default::default() })
        }
        Command::Console { listen, admin_token, workers } => {
            (settings(c, listen, admin_token, &workers), Roles { console: true, ..Default::default() })
        }
        Command::All { listen, admin_token, workers } => (settings(c, listen, admin_token, &workers), Roles::ALL),
    };
    let running = unseat::start(settings, roles, shutdown).await?;
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

impl Workers {
    fn default_for_bench() -> Self {
        Self {
            resolver_prefetch: 32,
            connector_prefetch: 64,
            // Each task in flight holds a database connection: stay well inside the pool.
            connector_concurrency: 24,
            max_attempts: 6,
            throttle_wait_seconds: 60,
            connector_public_only: false,
            connector_hold_back_after: 5,
            grace_seconds: 5,
            drain_seconds: 0,
            body_limit: 1024 * 1024,
            // The benchmarks measure capacity: no rate limit.
            scim_rate_limit: 0,
            scim_rate_burst: 0,
            db_pool: 64,
            metrics_listen: None,
            outbox_keep_seconds: 0,
        }
    }
}
