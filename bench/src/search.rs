//! `zoark-bench search`: document search on a corpus of generated English text embedded by the
//! local model (all-MiniLM-L6-v2), spread over 100 organizations — one holding 40 % of the
//! chunks, one holding 1 % — in a fresh database of the bench cluster.
//!
//! Reported (`target/bench/search.json`): the latency of the database query given the query's
//! vector, through `zoark_core::db::knowledge::search` (the API's own code, as a role under
//! row-level security like the API's), vector-only and hybrid, at concurrency 1 and 8; the
//! latency of embedding one query; recall@10 of the vector ranking against exact search, for the large and the small organization; the local model's
//! indexing rate on full 256-piece chunks; and the HNSW index build time. The vectors are
//! computed once per corpus and cached under `.zoark/bench/search/`.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::{AssertSqlSafe, PgPool, postgres::PgPoolOptions};
use uuid::Uuid;
use zoark_core::{
    access::{Actor, Principal, ReadKnowledge, Role},
    db::{
        knowledge::{self, Language, SearchQuery},
        tenant,
    },
    knowledge::SourceType,
};
use zoark_embed::{LocalModel, MAX_TOKENS, MODEL, chunk};

use crate::db;

#[derive(clap::Args, Debug, Clone)]
pub struct SearchArgs {
    /// The server, without a database: `postgres://user@host:port` (a superuser).
    #[arg(long)]
    pub server: String,
    /// Where the JSON report goes.
    #[arg(long)]
    pub out: PathBuf,
    /// The short run for CI: 2,000 chunks, 20 queries per organization.
    #[arg(long)]
    pub quick: bool,
    /// Chunks in the corpus [default: 100,000; quick 2,000]; 1,000,000 works too (the first run
    /// embeds it: about an hour per 100,000 on two cores).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Queries per organization and concurrency [default: 200; quick 20].
    #[arg(long)]
    pub queries: Option<usize>,
    /// The local model's directory.
    #[arg(long, default_value = ".zoark/models/all-MiniLM-L6-v2")]
    pub model_dir: PathBuf,
    /// Where corpus vectors are cached.
    #[arg(long, default_value = ".zoark/bench/search")]
    pub cache_dir: PathBuf,
    /// A Python with sentence-transformers installed: its indexing rate on the same texts and
    /// batch size is measured beside the local model's (`cargo xtask bench search --peers`
    /// installs one).
    #[arg(long)]
    pub sentence_transformers: Option<PathBuf>,
    /// Keep the corpus a previous run loaded (same size) instead of loading it again: for
    /// iterating on the search query. Migrations still run; the HNSW build is not timed.
    #[arg(long)]
    pub reuse: bool,
}

/// Organizations of the corpus: the first holds [`LARGE_SHARE`], the last [`SMALL_SHARE`].
const ORGANIZATIONS: usize = 100;
const LARGE_SHARE: f64 = 0.40;
const SMALL_SHARE: f64 = 0.01;
/// Chunks per document.
const DOCUMENT_CHUNKS: usize = 20;
/// Texts embedded per model call.
const BATCH: usize = 64;
/// Results compared for recall.
const K: usize = 10;

#[derive(Debug, Serialize)]
struct Latency {
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    queries: usize,
}

#[derive(Debug, Serialize)]
struct AtConcurrency {
    concurrency: usize,
    vector: Latency,
    hybrid: Latency,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    chunks: usize,
    organizations: usize,
    small_tenant_chunks: usize,
    large_tenant_chunks: usize,
    model: &'static str,
    /// At concurrency 8.
    vector_p95_ms: f64,
    /// At concurrency 8.
    hybrid_p95_ms: f64,
    embed_query_p95_ms: f64,
    recall_at_10: f64,
    recall_at_10_small_tenant: f64,
    index_chunks_per_s: f64,
    /// `index_chunks_per_s` over sentence-transformers' rate (with `--peers`).
    index_ratio_to_sentence_transformers: Option<f64>,
    sentence_transformers: Option<PeerRate>,
    /// `null` with `--reuse`.
    index_build_s: Option<f64>,
    by_concurrency: Vec<AtConcurrency>,
    embed_corpus_s: Option<f64>,
}

/// Generated English: sentences about one topic per chunk, from a topic's own vocabulary.
struct Topic {
    subjects: &'static [&'static str],
    verbs: &'static [&'static str],
    objects: &'static [&'static str],
    contexts: &'static [&'static str],
}

const TOPICS: &[Topic] = &[
    Topic {
        subjects: &[
            "The maintenance crew",
            "Each technician",
            "The night shift",
            "The plant engineer",
        ],
        verbs: &["lubricates", "inspects", "replaces", "calibrates"],
        objects: &[
            "the hydraulic press",
            "the conveyor bearings",
            "the pump filters",
            "the pressure valves",
        ],
        contexts: &[
            "every forty operating hours",
            "before the weekly restart",
            "after each overload alarm",
            "according to the service manual",
        ],
    },
    Topic {
        subjects: &[
            "The finance team",
            "The controller",
            "Accounts payable",
            "The auditor",
        ],
        verbs: &["reconciles", "approves", "reviews", "archives"],
        objects: &[
            "vendor invoices",
            "the quarterly ledger",
            "expense reports",
            "the cash forecast",
        ],
        contexts: &[
            "before the books close",
            "at the end of each month",
            "when the amount exceeds the limit",
            "with two signatures",
        ],
    },
    Topic {
        subjects: &[
            "New parents",
            "Every employee",
            "Part-time staff",
            "The people team",
        ],
        verbs: &[
            "may request",
            "are entitled to",
            "can extend",
            "must schedule",
        ],
        objects: &[
            "paid parental leave",
            "remote work days",
            "the annual holiday allowance",
            "sabbatical time",
        ],
        contexts: &[
            "after six months of service",
            "with four weeks of notice",
            "as the handbook describes",
            "in agreement with their manager",
        ],
    },
    Topic {
        subjects: &[
            "The baker",
            "Our pastry chef",
            "The apprentice",
            "The morning crew",
        ],
        verbs: &["feeds", "shapes", "proofs", "bakes"],
        objects: &[
            "the sourdough starter",
            "the rye loaves",
            "the croissant dough",
            "the seeded rolls",
        ],
        contexts: &[
            "twelve hours before mixing",
            "in a warm and humid room",
            "at two hundred and thirty degrees",
            "with equal weights of flour and water",
        ],
    },
    Topic {
        subjects: &[
            "The release manager",
            "The platform team",
            "Each developer",
            "The on-call engineer",
        ],
        verbs: &["deploys", "rolls back", "monitors", "reviews"],
        objects: &[
            "the payment service",
            "database migrations",
            "the container images",
            "the canary release",
        ],
        contexts: &[
            "behind a feature flag",
            "during the maintenance window",
            "when error rates rise",
            "after the integration tests pass",
        ],
    },
    Topic {
        subjects: &[
            "Travellers",
            "The assistant",
            "Sales representatives",
            "The travel desk",
        ],
        verbs: &["book", "cancel", "reimburse", "compare"],
        objects: &[
            "train tickets",
            "hotel rooms near the office",
            "rental cars",
            "conference flights",
        ],
        contexts: &[
            "through the approved agency",
            "at least two weeks ahead",
            "within the daily allowance",
            "when the client pays the trip",
        ],
    },
    Topic {
        subjects: &[
            "The gardener",
            "Volunteers",
            "The park service",
            "Our landscaping team",
        ],
        verbs: &["prunes", "waters", "plants", "mulches"],
        objects: &[
            "the apple trees",
            "the rose beds",
            "young oak saplings",
            "the vegetable plots",
        ],
        contexts: &[
            "in late winter",
            "early in the morning",
            "after the last frost",
            "during dry summer weeks",
        ],
    },
    Topic {
        subjects: &[
            "The security officer",
            "Every visitor",
            "The facilities team",
            "Contractors",
        ],
        verbs: &["registers", "escorts", "badges", "screens"],
        objects: &[
            "guests at the front desk",
            "deliveries to the loading dock",
            "access to the server room",
            "keys for the storage rooms",
        ],
        contexts: &[
            "before entering the building",
            "outside business hours",
            "with photo identification",
            "as the site policy requires",
        ],
    },
    Topic {
        subjects: &[
            "The marketing team",
            "Our copywriter",
            "The brand manager",
            "The social media lead",
        ],
        verbs: &["launches", "drafts", "schedules", "measures"],
        objects: &[
            "the spring newsletter",
            "product announcement posts",
            "the autumn campaign",
            "customer case studies",
        ],
        contexts: &[
            "two weeks before the trade fair",
            "with the new brand colours",
            "for every regional market",
            "against last year's results",
        ],
    },
    Topic {
        subjects: &[
            "The support agent",
            "Our help desk",
            "The customer success manager",
            "The escalation team",
        ],
        verbs: &["answers", "triages", "escalates", "closes"],
        objects: &[
            "billing questions",
            "password reset requests",
            "urgent outage tickets",
            "feature requests",
        ],
        contexts: &[
            "within four business hours",
            "with a clear summary",
            "once the customer confirms",
            "according to the service level agreement",
        ],
    },
    Topic {
        subjects: &[
            "The warehouse team",
            "The logistics planner",
            "Forklift drivers",
            "The inventory clerk",
        ],
        verbs: &["counts", "ships", "restocks", "labels"],
        objects: &[
            "pallets of spare parts",
            "outgoing customer orders",
            "the cold storage shelves",
            "returned goods",
        ],
        contexts: &[
            "every Friday afternoon",
            "before the truck arrives",
            "using the handheld scanners",
            "in first-in first-out order",
        ],
    },
    Topic {
        subjects: &[
            "The school nurse",
            "Teachers",
            "The head of year",
            "Parents",
        ],
        verbs: &["report", "record", "discuss", "plan"],
        objects: &[
            "student allergies",
            "field trip permissions",
            "exam timetables",
            "reading progress",
        ],
        contexts: &[
            "at the start of term",
            "in the weekly meeting",
            "through the school portal",
            "before the holidays",
        ],
    },
];

fn pick<'a>(rng: &mut StdRng, items: &'a [&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// People, places and project names mentioned by the text: a long tail of words that makes two
/// chunks of one topic differ as real documents do (their twelve topics alone embed as twelve
/// tight clusters, and a question between two of them sent the HNSW search into the wrong one).
const FIRST_NAMES: &[&str] = &[
    "Maria", "Jonas", "Aisha", "Tomasz", "Ingrid", "Kwame", "Lucia", "Hiroshi", "Fatima", "Oskar",
    "Priya", "Mateo", "Elena", "Dmitri", "Chloe", "Samuel", "Yara", "Henrik", "Amara", "Luca",
    "Noor", "Felix", "Sofia", "Tariq", "Greta", "Diego", "Hana", "Pavel", "Leila", "Emil",
];
const LAST_NAMES: &[&str] = &[
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Kowalski",
    "Tanaka",
    "Haddad",
    "Fischer",
    "Silva",
    "Novak",
    "Mensah",
    "Rossi",
    "Andersen",
    "Petrov",
    "Garcia",
    "Nakamura",
    "Byrne",
    "Schmidt",
    "Costa",
    "Dubois",
    "Yilmaz",
    "Kaur",
    "Ivanova",
    "Bakker",
    "Nilsen",
    "Ferreira",
    "Horvath",
];
const PLACES: &[&str] = &[
    "Lisbon",
    "Rotterdam",
    "Nairobi",
    "Krakow",
    "Osaka",
    "Montreal",
    "Dublin",
    "Valencia",
    "Gothenburg",
    "Accra",
    "Porto",
    "Tallinn",
    "Leeds",
    "Bologna",
    "Busan",
    "Lyon",
    "Austin",
    "Cork",
    "Graz",
    "Bergen",
    "Seville",
    "Antwerp",
    "Pune",
    "Tampere",
];
const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const SYLLABLES: &[&str] = &[
    "var", "ne", "lo", "quis", "tra", "mo", "ren", "ka", "bel", "do", "sil", "ta", "gor", "vi",
    "an", "tel", "mi", "ros", "pa", "zen", "ul", "cor", "fe", "dan",
];

fn person(rng: &mut StdRng) -> String {
    format!("{} {}", pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES))
}

/// A made-up project name of two or three syllables ("Quismoren").
fn codename(rng: &mut StdRng) -> String {
    let n = rng.random_range(2..4);
    let word: String = (0..n).map(|_| pick(rng, SYLLABLES)).collect();
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

fn sentence(rng: &mut StdRng, topic: &Topic) -> String {
    let object = pick(rng, topic.objects);
    match rng.random_range(0..10) {
        0 | 1 => format!(
            "{} noted that {} {} {object} {}.",
            person(rng),
            pick(rng, topic.subjects).to_lowercase(),
            pick(rng, topic.verbs),
            pick(rng, topic.contexts)
        ),
        2 => format!(
            "In {}, the {} team {} {object} on {} {}.",
            pick(rng, PLACES),
            codename(rng),
            pick(rng, topic.verbs),
            rng.random_range(1..29),
            pick(rng, MONTHS)
        ),
        3 => format!(
            "Ticket {} about {object} was raised by {} and closed after {} days.",
            rng.random_range(1000..99_999),
            person(rng),
            rng.random_range(1..30)
        ),
        _ => format!(
            "{} {} {object} {}.",
            pick(rng, topic.subjects),
            pick(rng, topic.verbs),
            pick(rng, topic.contexts)
        ),
    }
}

fn question(rng: &mut StdRng, topic: &Topic) -> String {
    let object = pick(rng, topic.objects);
    let context = pick(rng, topic.contexts);
    match rng.random_range(0..4) {
        0 => format!("Who {} {object}?", pick(rng, topic.verbs)),
        1 => format!("What happens to {object} {context}?"),
        2 => format!("What did {} decide about {object}?", person(rng)),
        _ => format!("Rules for {object} {context}"),
    }
}

/// One chunk of the corpus.
struct CorpusChunk {
    organization: usize,
    document: usize,
    ordinal: usize,
    text: String,
}

/// How many chunks organization `i` holds.
fn share(organization: usize, total: usize) -> usize {
    let large = (total as f64 * LARGE_SHARE) as usize;
    let small = (total as f64 * SMALL_SHARE) as usize;
    match organization {
        0 => large,
        o if o == ORGANIZATIONS - 1 => small,
        o => {
            let rest = total - large - small;
            let middle = ORGANIZATIONS - 2;
            rest / middle + usize::from(o - 1 < rest % middle)
        }
    }
}

fn corpus(total: usize) -> Vec<CorpusChunk> {
    let mut rng = StdRng::seed_from_u64(14);
    let mut out = Vec::with_capacity(total);
    let mut document = 0;
    for organization in 0..ORGANIZATIONS {
        let n = share(organization, total);
        let mut ordinal = 0;
        let (mut main, mut second) = (&TOPICS[0], &TOPICS[1]);
        for i in 0..n {
            if i % DOCUMENT_CHUNKS == 0 {
                document += 1;
                ordinal = 0;
                // A document is about one topic and touches on another, as real ones do.
                main = &TOPICS[rng.random_range(0..TOPICS.len())];
                second = &TOPICS[rng.random_range(0..TOPICS.len())];
            }
            let sentences = rng.random_range(2..6);
            let text = (0..sentences)
                .map(|_| {
                    let topic = if rng.random_bool(0.75) { main } else { second };
                    sentence(&mut rng, topic)
                })
                .collect::<Vec<_>>()
                .join(" ");
            out.push(CorpusChunk {
                organization,
                document: document - 1,
                ordinal,
                text,
            });
            ordinal += 1;
        }
    }
    out
}

/// Embeds `texts` in batches, handing each batch's vectors to `keep` as it is done.
fn embed_all(
    model: &LocalModel,
    texts: &[&str],
    mut keep: impl FnMut(&[Vec<f32>]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut done = 0;
    for (i, batch) in texts.chunks(BATCH).enumerate() {
        keep(&model.embed(batch)?)?;
        done += batch.len();
        if i % 100 == 99 {
            let rate = done as f64 / started.elapsed().as_secs_f64();
            println!("embedded {done} of {} chunks ({rate:.0}/s)", texts.len());
        }
    }
    Ok(())
}

/// The corpus's vectors: from the cache when it holds this corpus, else computed and cached.
fn vectors(
    args: &SearchArgs,
    model: &LocalModel,
    chunks: &[CorpusChunk],
) -> anyhow::Result<(Vec<Vec<f32>>, Option<f64>)> {
    let mut digest = Sha256::new();
    for c in chunks {
        digest.update(c.text.as_bytes());
        digest.update([0]);
    }
    let name = format!(
        "corpus-{}-{}.f32",
        chunks.len(),
        &hex::encode(digest.finalize())[..16]
    );
    let path = args.cache_dir.join(name);
    let dims = zoark_embed::DIMENSION;
    if let Ok(bytes) = std::fs::read(&path)
        && bytes.len() == chunks.len() * dims * 4
    {
        println!("corpus vectors from {}", path.display());
        return Ok((decode(&bytes, dims), None));
    }
    // Vectors are appended to `<name>.partial` batch by batch, so that an interrupted run
    // (an hour and more for 100,000 chunks) resumes where it stopped.
    std::fs::create_dir_all(&args.cache_dir)?;
    let partial = path.with_extension("f32.partial");
    let mut done = std::fs::read(&partial).map_or_else(|_| Vec::new(), |b| decode(&b, dims));
    done.truncate(chunks.len());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)?;
    // Drop a torn last vector, if any, before appending.
    file.set_len(u64::try_from(done.len() * dims * 4)?)?;
    println!(
        "embedding {} chunks, {} already done (cached afterwards)",
        chunks.len(),
        done.len()
    );
    let started = Instant::now();
    let texts: Vec<&str> = chunks
        .iter()
        .skip(done.len())
        .map(|c| c.text.as_str())
        .collect();
    embed_all(model, &texts, |batch| {
        use std::io::Write as _;
        file.write_all(&encode(batch))?;
        done.extend_from_slice(batch);
        Ok(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok((done, Some(seconds)))
}

/// Vectors as the cache stores them: little-endian `f32`s, one vector after another.
fn encode(vectors: &[Vec<f32>]) -> Vec<u8> {
    vectors
        .iter()
        .flatten()
        .flat_map(|f| f.to_le_bytes())
        .collect()
}

/// The vectors of `dims` dimensions in `bytes` (a torn last one is left out).
fn decode(bytes: &[u8], dims: usize) -> Vec<Vec<f32>> {
    bytes
        .chunks_exact(dims * 4)
        .map(|v| {
            v.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .collect()
}

fn vector_text(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|f| format!("{f}")).collect();
    format!("[{}]", parts.join(","))
}

/// The benchmark's database.
const DATABASE: &str = "zoark_bench_search";

/// The organizations of a corpus of `total` chunks a previous run loaded, in order; `None` when
/// there is none (or another size).
async fn loaded(server: &str, total: usize) -> anyhow::Result<Option<Vec<Uuid>>> {
    let Ok(pool) = db::pool(&db::url(server, DATABASE)).await else {
        return Ok(None);
    };
    let chunks: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM rag_chunks")
        .fetch_one(&pool)
        .await
        .ok();
    if chunks != Some(i64::try_from(total)?) {
        return Ok(None);
    }
    let organizations: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM organizations WHERE name LIKE 'bench %'
         ORDER BY split_part(name, ' ', 2)::int",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok((organizations.len() == ORGANIZATIONS).then_some(organizations))
}

/// Loads the corpus; returns the organizations' ids and the index build time.
async fn load(
    pool: &PgPool,
    chunks: &[CorpusChunk],
    vectors: &[Vec<f32>],
) -> anyhow::Result<(Vec<Uuid>, f64)> {
    let organizations: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO organizations (name) SELECT 'bench ' || g FROM generate_series(1, $1) g
         RETURNING id",
    )
    .bind(i32::try_from(ORGANIZATIONS)?)
    .fetch_all(pool)
    .await?;
    let documents = chunks.last().map_or(0, |c| c.document + 1);
    let mut conn = pool.acquire().await?;
    // One stored file and one indexed document per document of the corpus.
    let mut doc_orgs = vec![Uuid::nil(); documents];
    for c in chunks {
        doc_orgs[c.document] = organizations[c.organization];
    }
    let documents: Vec<(Uuid, String)> = sqlx::query_as(
        "WITH d AS (SELECT o, n FROM unnest($1::uuid[]) WITH ORDINALITY AS t (o, n)),
              f AS (INSERT INTO stored_files (organization_id, storage_key, filename, content_type,
                                              size_bytes, sha256)
                    SELECT o, 'bench/' || n, 'doc-' || n || '.txt', 'text/plain', 1,
                           sha256(n::text::bytea) FROM d ORDER BY n
                    RETURNING id, organization_id, storage_key)
         INSERT INTO rag_documents (organization_id, title, source_type, file_id, content_type,
                                    content_sha256, status, indexed_at, generation,
                                    embedding_model, embedding_dimensions)
         SELECT f.organization_id, 'Document ' || split_part(f.storage_key, '/', 2),
                'knowledge', f.id, 'text/plain',
                sha256(split_part(f.storage_key, '/', 2)::bytea), 'indexed', now(), 1, $2, 384
         FROM f ORDER BY split_part(f.storage_key, '/', 2)::int
         RETURNING id, created_at::text",
    )
    .bind(&doc_orgs)
    .bind(MODEL)
    .fetch_all(&mut *conn)
    .await?;
    // The HNSW index is built after the load, and timed.
    let index_sql: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'rag_chunks_embedding_384_idx'",
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("DROP INDEX rag_chunks_embedding_384_idx")
        .execute(&mut *conn)
        .await?;
    let mut copy = conn
        .copy_in_raw(
            "COPY rag_chunks (organization_id, document_id, generation, ordinal, content,
                              token_count, embedding, embedding_dimensions, embedding_model,
                              language, source_type, document_created_at) FROM STDIN",
        )
        .await?;
    let mut buffer = String::new();
    for (c, v) in chunks.iter().zip(vectors) {
        let (document, created_at) = &documents[c.document];
        buffer.push_str(&format!(
            "{}\t{document}\t1\t{}\t{}\t{}\t{}\t384\t{MODEL}\tenglish\tknowledge\t{created_at}\n",
            organizations[c.organization],
            c.ordinal,
            c.text,
            c.text.split_whitespace().count(),
            vector_text(v),
        ));
        if buffer.len() > 1 << 20 {
            copy.send(std::mem::take(&mut buffer).into_bytes()).await?;
        }
    }
    copy.send(buffer.into_bytes()).await?;
    copy.finish().await?;
    sqlx::query("SET maintenance_work_mem = '1GB'")
        .execute(&mut *conn)
        .await?;
    let started = Instant::now();
    sqlx::query(AssertSqlSafe(index_sql))
        .execute(&mut *conn)
        .await?;
    let build = started.elapsed().as_secs_f64();
    sqlx::query("VACUUM ANALYZE rag_chunks, rag_chunk_terms")
        .execute(&mut *conn)
        .await?;
    sqlx::query("ANALYZE rag_documents")
        .execute(&mut *conn)
        .await?;
    Ok((organizations, build))
}

fn proof(organization: Uuid) -> anyhow::Result<zoark_core::access::Granted<ReadKnowledge>> {
    let principal = Principal::authenticated(
        organization,
        Role::Admin,
        Actor::ApiKey {
            key_id: Uuid::nil(),
        },
    );
    Ok(principal.authorize::<ReadKnowledge>()?)
}

/// A query of the benchmark: its organization, text and vector.
struct Query {
    organization: Uuid,
    text: String,
    vector: Vec<f32>,
}

/// The found chunks, as (document, ordinal).
async fn run_search(
    pool: &PgPool,
    q: &Query,
    hybrid: bool,
) -> anyhow::Result<(Duration, Vec<(Uuid, i32)>)> {
    let granted = proof(q.organization)?;
    let query = SearchQuery {
        text: if hybrid { &q.text } else { "" },
        vector: q.vector.clone(),
        model: MODEL,
        sources: SourceType::ALL.to_vec(),
        from: None,
        to: None,
        language: Language::ENGLISH,
        limit: i64::try_from(K)?,
    };
    let started = Instant::now();
    let mut tx = tenant::begin(pool, &granted).await?;
    let hits = knowledge::search(&mut tx, &granted, &query).await?;
    tx.commit().await?;
    let elapsed = started.elapsed();
    Ok((
        elapsed,
        hits.into_iter()
            .map(|h| (h.document_id, h.chunk_ordinal))
            .collect(),
    ))
}

/// The exact nearest chunks of the query's organization: a scan that reads every one.
async fn exact(pool: &PgPool, q: &Query) -> anyhow::Result<Vec<(Uuid, i32)>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL enable_indexscan = off")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL enable_bitmapscan = off")
        .execute(&mut *tx)
        .await?;
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT document_id, ordinal FROM rag_chunks WHERE organization_id = $1
         ORDER BY embedding::vector(384) <=> $2 LIMIT $3",
    )
    .bind(q.organization)
    .bind(pgvector::Vector::from(q.vector.clone()))
    .bind(i64::try_from(K)?)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let at = |p: f64| -> f64 {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    Latency {
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        queries: samples.len(),
    }
}

/// Every query, `concurrency` at a time; the latency of each.
async fn timed(
    pool: &PgPool,
    queries: &Arc<Vec<Query>>,
    concurrency: usize,
    hybrid: bool,
) -> anyhow::Result<Latency> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (pool, queries, next) = (pool.clone(), queries.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(q) = queries.get(i) else { break };
                samples.push(run_search(&pool, q, hybrid).await?.0);
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(latency(all))
}

/// The role the searches run as: like the API's, neither a superuser nor exempt from row-level
/// security, so that the tenant policies apply to every statement as they do in production.
const API_ROLE: &str = "zoark_bench_api";

/// A pool connected as [`API_ROLE`], created (once per cluster) and granted the tables.
async fn api_pool(admin: &PgPool, server: &str) -> anyhow::Result<PgPool> {
    sqlx::query(AssertSqlSafe(format!(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{API_ROLE}') THEN
                 CREATE ROLE {API_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS;
             END IF;
         END $$"
    )))
    .execute(admin)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {API_ROLE}"
    )))
    .execute(admin)
    .await?;
    let url = db::url(server, DATABASE);
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options.username(API_ROLE))
        .await?)
}

/// Recall@10 of the searches (run on `api`) against exact scans (run on `platform`).
async fn recall(api: &PgPool, platform: &PgPool, queries: &[Query]) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for q in queries {
        let (_, found) = run_search(api, q, false).await?;
        let truth: HashSet<(Uuid, i32)> = exact(platform, q).await?.into_iter().collect();
        let hits = found.iter().take(K).filter(|f| truth.contains(f)).count();
        sum += hits as f64 / truth.len().clamp(1, K) as f64;
    }
    Ok(sum / queries.len().max(1) as f64)
}

/// Texts embedded per call when the indexing rate is measured (the indexing job's batch).
const INDEX_BATCH: usize = 32;

/// `n` chunks of the corpus's text, cut at 256 word pieces by the model's tokenizer as the
/// indexing job cuts documents.
fn index_texts(
    model: &LocalModel,
    chunks: &[CorpusChunk],
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let text: String = chunks
        .iter()
        .take(2000)
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let sections = [chunk::Section {
        page: None,
        heading: None,
        text,
    }];
    let pieces = chunk::chunk(model.tokenizer(), &sections, MAX_TOKENS, 0)
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(pieces.into_iter().take(n).map(|c| c.text).collect())
}

/// Chunks per second of the local model on `texts`, in batches of [`INDEX_BATCH`], after one
/// batch to warm up.
fn index_rate(model: &LocalModel, texts: &[String]) -> anyhow::Result<f64> {
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    model.embed(&texts[..INDEX_BATCH.min(texts.len())])?;
    let started = Instant::now();
    for batch in texts.chunks(INDEX_BATCH) {
        model.embed(batch)?;
    }
    Ok(texts.len() as f64 / started.elapsed().as_secs_f64())
}

/// sentence-transformers' rate on the same texts and batch size, run by `python` (which has it
/// installed) through `bench/peers/sentence_transformers_rate.py`.
fn peer_index_rate(
    python: &std::path::Path,
    model_dir: &std::path::Path,
    texts: &[String],
) -> anyhow::Result<PeerRate> {
    use std::io::Write as _;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers/sentence_transformers_rate.py");
    let mut child = std::process::Command::new(python)
        .arg(&script)
        .arg(model_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.display()))?;
    let request = serde_json::json!({"texts": texts, "batch_size": INDEX_BATCH});
    child
        .stdin
        .take()
        .context("the peer's stdin")?
        .write_all(&serde_json::to_vec(&request)?)?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        anyhow::bail!("sentence-transformers failed ({})", output.status);
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct PeerRate {
    chunks_per_s: f64,
    version: String,
}

pub async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let total = args
        .chunks
        .unwrap_or(if args.quick { 2_000 } else { 100_000 });
    let per_org_queries = args.queries.unwrap_or(if args.quick { 20 } else { 200 });
    let model = Arc::new(
        zoark_embed::LocalModel::load(&args.model_dir).context("loading the local model")?,
    );
    let ((vectors, embed_corpus_s), chunks) = {
        let (model, args) = (model.clone(), args.clone());
        tokio::task::spawn_blocking(move || {
            let chunks = corpus(total);
            vectors(&args, &model, &chunks).map(|v| (v, chunks))
        })
        .await??
    };

    let admin = db::admin_pool(&args.server).await?;
    let reused = if args.reuse {
        loaded(&args.server, total).await?
    } else {
        None
    };
    let url = match reused {
        Some(_) => db::url(&args.server, DATABASE),
        None => db::fresh(&admin, &args.server, DATABASE).await?,
    };
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(zoark_core::db::platform_options(&url)?)
        .await?;
    zoark_core::db::migrate_all(&pool)
        .await
        .context("migrating the benchmark database")?;
    let (organizations, index_build_s) = match reused {
        Some(organizations) => {
            println!("reusing the {total} chunks loaded before");
            (organizations, None)
        }
        None => {
            println!("loading {total} chunks");
            let (organizations, build) = load(&pool, &chunks, &vectors).await?;
            println!("HNSW index built in {build:.1} s");
            (organizations, Some(build))
        }
    };

    // Queries: questions of each topic, embedded one by one as the API embeds them.
    let mut rng = StdRng::seed_from_u64(2026);
    let mut embed_samples = Vec::new();
    let mut make = |organization: Uuid, n: usize| -> anyhow::Result<Vec<Query>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let topic = &TOPICS[rng.random_range(0..TOPICS.len())];
            let text = question(&mut rng, topic);
            let started = Instant::now();
            let vector = model.embed(&[text.as_str()])?.pop().unwrap_or_default();
            embed_samples.push(started.elapsed());
            out.push(Query {
                organization,
                text,
                vector,
            });
        }
        Ok(out)
    };
    let large = make(organizations[0], per_org_queries)?;
    let small = make(organizations[ORGANIZATIONS - 1], per_org_queries)?;
    let embed_query = latency(embed_samples);

    let api = api_pool(&pool, &args.server).await?;
    let recall_at_10 = recall(&api, &pool, &large).await?;
    let recall_at_10_small_tenant = recall(&api, &pool, &small).await?;
    println!("recall@10 {recall_at_10:.3}, small tenant {recall_at_10_small_tenant:.3}");

    let mut all: Vec<Query> = Vec::new();
    for (l, s) in large.into_iter().zip(small) {
        all.push(l);
        all.push(s);
    }
    let all = Arc::new(all);
    // A warm-up pass, then the measured ones.
    timed(&api, &all, 2, true).await?;
    let mut by_concurrency = Vec::new();
    for concurrency in [1, 8] {
        let vector = timed(&api, &all, concurrency, false).await?;
        let hybrid = timed(&api, &all, concurrency, true).await?;
        println!(
            "concurrency {concurrency}: vector p50 {:.1} ms p95 {:.1} ms; hybrid p50 {:.1} ms \
             p95 {:.1} ms",
            vector.p50_ms, vector.p95_ms, hybrid.p50_ms, hybrid.p95_ms
        );
        by_concurrency.push(AtConcurrency {
            concurrency,
            vector,
            hybrid,
        });
    }
    let (index_chunks_per_s, peer) = {
        let (model, args) = (model.clone(), args.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            // 256 chunks (64 in the quick run: a chunk takes about 0.2 s).
            let texts = index_texts(&model, &chunks, if args.quick { 64 } else { 256 })?;
            let ours = index_rate(&model, &texts)?;
            let peer = args
                .sentence_transformers
                .as_deref()
                .map(|python| peer_index_rate(python, &args.model_dir, &texts))
                .transpose()?;
            Ok((ours, peer))
        })
        .await??
    };
    println!("indexing: {index_chunks_per_s:.1} chunks/s of 256 word pieces");
    if let Some(peer) = &peer {
        println!(
            "sentence-transformers: {:.1} chunks/s ({}); Zoark's local model {:.2}×",
            peer.chunks_per_s,
            peer.version,
            index_chunks_per_s / peer.chunks_per_s
        );
    }
    let at8 = by_concurrency
        .iter()
        .find(|c| c.concurrency == 8)
        .context("no run at concurrency 8")?;
    let report = Report {
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        chunks: total,
        organizations: ORGANIZATIONS,
        small_tenant_chunks: share(ORGANIZATIONS - 1, total),
        large_tenant_chunks: share(0, total),
        model: MODEL,
        vector_p95_ms: at8.vector.p95_ms,
        hybrid_p95_ms: at8.hybrid.p95_ms,
        embed_query_p95_ms: embed_query.p95_ms,
        recall_at_10,
        recall_at_10_small_tenant,
        index_chunks_per_s,
        index_ratio_to_sentence_transformers: peer
            .as_ref()
            .map(|p| index_chunks_per_s / p.chunks_per_s),
        sentence_transformers: peer,
        index_build_s,
        by_concurrency,
        embed_corpus_s,
    };
    pool.close().await;
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
