// graphile-worker 0.18 as `cargo xtask bench queue` runs it: one process of BENCH_CONCURRENCY
// slots (the benchmark starts one or more), the tuning from the project's own performance docs
// (local queue, completion batching without delay), and its per-job info logs silenced as Zoark's
// are (Zoark logs each job at debug).
//
// Tasks: `noop` does nothing; `sleep` waits payload.ms milliseconds; `ping` sends
// NOTIFY bench_ping, '<payload.id>' (latency samples).
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
      maxPoolSize: number("BENCH_POOL", concurrency + 2),
      localQueue: { size: number("BENCH_LOCAL_QUEUE", 500) },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
    },
  },
  taskList: {
    noop: async () => {},
    sleep: (payload) => new Promise((resolve) => setTimeout(resolve, payload.ms)),
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
