// The coordinator's database file (CheckpointStore): how it is marked as
// ours, its schema version and its tables. A schema-1 file gains the
// server_state table and the rounds' aggregation and privacy columns when a
// writer opens it.
#pragma once

namespace fedsgd::checkpoint_schema {

// "FSGD": marks the file as ours (PRAGMA application_id).
constexpr int kApplicationId = 0x46534744;
// 2: rounds.aggregation and rounds.privacy (what the rule and differential
// privacy did), and the server_state table.
constexpr int kSchemaVersion = 2;

constexpr const char* kSchema = R"sql(
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  plan TEXT NOT NULL,
  created_at REAL NOT NULL
);
CREATE TABLE rounds (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  round INTEGER NOT NULL,
  train_loss REAL,
  test_accuracy REAL,
  test_loss REAL,
  started_at REAL,
  finished_at REAL,
  aggregate_seconds REAL,
  rejected_updates INTEGER,
  bytes_in INTEGER,
  devices TEXT NOT NULL,
  aggregation TEXT,
  privacy TEXT,
  PRIMARY KEY (run_id, round)
);
CREATE TABLE checkpoints (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  round INTEGER NOT NULL,
  params BLOB NOT NULL,
  PRIMARY KEY (run_id, round)
);
)sql";

// Schema 2 (from 1): the server state, and what aggregation did per round.
constexpr const char* kServerStateTable = R"sql(
CREATE TABLE IF NOT EXISTS server_state (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  name TEXT NOT NULL,
  round INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (run_id, name)
);
)sql";

}  // namespace fedsgd::checkpoint_schema
