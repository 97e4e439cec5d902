"""Ordered schema migrations, applied at startup through PRAGMA user_version."""

from __future__ import annotations

# Each entry moves the schema from version i to i+1. Never edit a shipped entry: append a new one.
MIGRATIONS: tuple[str, ...] = (
    # 1: generations and their full-text index (external content, kept in sync by triggers).
    """
    CREATE TABLE generations (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL,
        guild_id INTEGER NOT NULL DEFAULT 0,
        channel_id INTEGER NOT NULL DEFAULT 0,
        prompt TEXT NOT NULL,
        negative TEXT NOT NULL DEFAULT '',
        params TEXT NOT NULL DEFAULT '{}',
        seed INTEGER NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        preset TEXT NOT NULL DEFAULT '',
        style TEXT NOT NULL DEFAULT '',
        images TEXT NOT NULL DEFAULT '[]',
        parent_id INTEGER REFERENCES generations(id) ON DELETE SET NULL,
        created_at REAL NOT NULL,
        favorite INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX generations_user ON generations(user_id, id);
    CREATE INDEX generations_guild ON generations(guild_id, id);
    CREATE VIRTUAL TABLE generations_fts USING fts5(
        prompt, negative, preset, style,
        content='generations', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER generations_ai AFTER INSERT ON generations BEGIN
        INSERT INTO generations_fts(rowid, prompt, negative, preset, style)
        VALUES (new.id, new.prompt, new.negative, new.preset, new.style);
    END;
    CREATE TRIGGER generations_ad AFTER DELETE ON generations BEGIN
        INSERT INTO generations_fts(generations_fts, rowid, prompt, negative, preset, style)
        VALUES ('delete', old.id, old.prompt, old.negative, old.preset, old.style);
    END;
    CREATE TRIGGER generations_au AFTER UPDATE OF prompt, negative, preset, style ON generations BEGIN
        INSERT INTO generations_fts(generations_fts, rowid, prompt, negative, preset, style)
        VALUES ('delete', old.id, old.prompt, old.negative, old.preset, old.style);
        INSERT INTO generations_fts(rowid, prompt, negative, preset, style)
        VALUES (new.id, new.prompt, new.negative, new.preset, new.style);
    END;
    """,
    # 2: the prompt library (styles, negative sets, ...) and named presets; guild_id/user_id 0 = global.
    """
    CREATE TABLE prompt_library (
        id INTEGER PRIMARY KEY,
        label TEXT NOT NULL,
        category TEXT NOT NULL CHECK (category IN ('style','negative','character','lighting','other')),
        content TEXT NOT NULL,
        negative TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        guild_id INTEGER NOT NULL DEFAULT 0,
        author_id INTEGER NOT NULL DEFAULT 0,
        shipped INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        UNIQUE (guild_id, category, label)
    );
    CREATE TABLE presets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('image','llm')),
        user_id INTEGER NOT NULL DEFAULT 0,
        guild_id INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL,
        shipped INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        UNIQUE (kind, guild_id, user_id, name)
    );
    """,
    # 3: the job queue's state machine.
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL DEFAULT 'generate',
        user_id INTEGER NOT NULL,
        guild_id INTEGER NOT NULL DEFAULT 0,
        channel_id INTEGER NOT NULL DEFAULT 0,
        payload TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'queued'
            CHECK (state IN ('queued','running','done','failed','cancelled')),
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 3,
        lease_owner TEXT,
        lease_expires REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        progress TEXT NOT NULL DEFAULT '{}',
        result TEXT,
        error TEXT,
        reply_to TEXT NOT NULL DEFAULT '{}',
        posted INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX jobs_state ON jobs(state, priority DESC, id);
    CREATE INDEX jobs_user_state ON jobs(user_id, state);
    CREATE INDEX jobs_unposted ON jobs(posted, state);
    """,
    # 4: per-user and per-guild settings (JSON objects of defaults and policy).
    """
    CREATE TABLE user_settings (
        user_id INTEGER PRIMARY KEY,
        data TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL
    );
    CREATE TABLE guild_settings (
        guild_id INTEGER PRIMARY KEY,
        data TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL
    );
    """,
    # 5: which job produced which generation, so a retried job records its history row exactly once.
    # (A side table rather than a generations.job_id column: `SELECT g.*` readers keep their shape.)
    """
    CREATE TABLE generation_jobs (
        job_id INTEGER PRIMARY KEY,
        generation_id INTEGER NOT NULL UNIQUE REFERENCES generations(id) ON DELETE CASCADE
    );
    """,
    # 6: agent turns: what the agent decided and which tool calls it made, so a user can ask "why?".
    """
    CREATE TABLE agent_turns (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL,
        guild_id INTEGER NOT NULL DEFAULT 0,
        channel_id INTEGER NOT NULL DEFAULT 0,
        request TEXT NOT NULL,
        route TEXT NOT NULL DEFAULT '',
        decided_by TEXT NOT NULL DEFAULT '',
        trace TEXT NOT NULL DEFAULT '{}',
        reply TEXT NOT NULL DEFAULT '',
        stopped TEXT,
        ms REAL NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE INDEX agent_turns_user ON agent_turns(user_id, channel_id, id);
    CREATE TABLE agent_turn_jobs (
        job_id INTEGER PRIMARY KEY,
        turn_id INTEGER NOT NULL REFERENCES agent_turns(id) ON DELETE CASCADE
    );
    CREATE INDEX agent_turn_jobs_turn ON agent_turn_jobs(turn_id);
    """,
)

LATEST = len(MIGRATIONS)


def pending(current: int) -> list[tuple[int, str]]:
    """The (target_version, sql) steps still to apply after `current`."""
    if current > LATEST:
        raise RuntimeError(f"database schema version {current} is newer than this Atelier ({LATEST})")
    return [(i + 1, MIGRATIONS[i]) for i in range(current, LATEST)]
