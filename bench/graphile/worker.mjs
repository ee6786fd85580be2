// graphile-worker 0.18 as `cargo xtask bench queue` runs it: one process, the tuning from the
// project's own performance docs (local queue, completion batching without delay), and its
// per-job info logs silenced as Zoark's are (Zoark logs each job at debug).
//
// Tasks: `noop` does nothing; `ping` sends NOTIFY bench_ping, '<payload.id>' (latency samples).
// Prints "ready" once the worker runs; stops on SIGTERM.
import { Logger, run } from "graphile-worker";

const number = (name, fallback) => Number(process.env[name] ?? fallback);
const concurrency = number("BENCH_CONCURRENCY", 24);

const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`${level}: ${message}`);
});

const runner = await run({
  noHandleSignals: true,
  logger,
  preset: {
    worker: {
      connectionString: process.env.DATABASE_URL,
      concurrentJobs: concurrency,
      maxPoolSize: concurrency + 2,
      localQueue: { size: number("BENCH_LOCAL_QUEUE", 500) },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
    },
  },
  taskList: {
    noop: async () => {},
    ping: async (payload, helpers) => {
      await helpers.query("SELECT pg_notify('bench_ping', $1)", [payload.id]);
    },
  },
});
console.log("ready");
process.on("SIGTERM", () => {
  runner.stop().then(() => process.exit(0));
});
await runner.promise;
