import winston from 'winston';

export type Logger = winston.Logger;

/** Structured JSON logs on stdout: one line per operation, with IDs and duration. */
export function createLogger(level: string): Logger {
  return winston.createLogger({
    level,
    format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
    transports: [new winston.transports.Console()],
  });
}

/** A logger that drops everything, for unit tests. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console()] });
}

/** Short form of a Docker ID for log fields. */
export function shortId(id: string | undefined): string | undefined {
  return id === undefined ? undefined : id.slice(0, 12);
}
