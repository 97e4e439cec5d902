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
    # 7: web API keys (only a sha256 of each token is kept) and every webhook delivery attempt.
    """
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL,
        guild_id INTEGER NOT NULL DEFAULT 0,
        name TEXT NOT NULL DEFAULT '',
        prefix TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        webhook_secret TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_used_at REAL,
        revoked_at REAL
    );
    CREATE INDEX api_keys_user ON api_keys(user_id, id);
    CREATE TABLE webhooks (
        job_id INTEGER PRIMARY KEY,
        key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
        url TEXT NOT NULL,
        created_at REAL NOT NULL,
        delivered_at REAL
    );
    CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY,
        key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
        job_id INTEGER NOT NULL,
        url TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status INTEGER,
        error TEXT,
        ok INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE INDEX webhook_deliveries_job ON webhook_deliveries(job_id, attempt);
    CREATE INDEX generations_parent ON generations(parent_id);
    """,
    # 8: the seed-aware result cache, measured GPU rates per preset and device, and each job's cost estimate.
    """
    CREATE TABLE result_cache (
        key TEXT PRIMARY KEY,
        generation_id INTEGER NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
        created_at REAL NOT NULL
    );
    CREATE INDEX result_cache_age ON result_cache(created_at);
    CREATE TABLE preset_rates (
        preset TEXT NOT NULL,
        device TEXT NOT NULL,
        rate REAL NOT NULL,
        samples INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL,
        PRIMARY KEY (preset, device)
    );
    CREATE TABLE job_costs (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        gpu_s REAL NOT NULL
    );
    """,
    # 9: the web gallery: single-use login links, browser sessions, share links (sha256 of each token only)
    # and one thumbnail file per generation image.
    """
    CREATE TABLE web_logins (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        guild_id INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL
    );
    CREATE TABLE web_sessions (
        id INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL,
        guild_id INTEGER NOT NULL DEFAULT 0,
        csrf TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);
    CREATE TABLE share_links (
        id INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        generation_id INTEGER NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX share_links_generation ON share_links(generation_id);
    CREATE TABLE thumbnails (
        generation_id INTEGER NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        path TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (generation_id, idx)
    );
    """,
    # 10: vision auto-tags: per-image tags, each generation's tagging state, and a `tags` column searched by
    # the history FTS index (rebuilt with that column; its triggers follow).
    """
    CREATE TABLE generation_tags (
        generation_id INTEGER NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        tag TEXT NOT NULL,
        PRIMARY KEY (generation_id, idx, tag)
    );
    CREATE INDEX generation_tags_tag ON generation_tags(tag, generation_id);
    CREATE TABLE tagging (
        generation_id INTEGER PRIMARY KEY REFERENCES generations(id) ON DELETE CASCADE,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL
    );
    ALTER TABLE generations ADD COLUMN tags TEXT NOT NULL DEFAULT '';
    DROP TRIGGER generations_ai;
    DROP TRIGGER generations_ad;
    DROP TRIGGER generations_au;
    DROP TABLE generations_fts;
    CREATE VIRTUAL TABLE generations_fts USING fts5(
        prompt, negative, preset, style, tags,
        content='generations', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER generations_ai AFTER INSERT ON generations BEGIN
        INSERT INTO generations_fts(rowid, prompt, negative, preset, style, tags)
        VALUES (new.id, new.prompt, new.negative, new.preset, new.style, new.tags);
    END;
    CREATE TRIGGER generations_ad AFTER DELETE ON generations BEGIN
        INSERT INTO generations_fts(generations_fts, rowid, prompt, negative, preset, style, tags)
        VALUES ('delete', old.id, old.prompt, old.negative, old.preset, old.style, old.tags);
    END;
    CREATE TRIGGER generations_au AFTER UPDATE OF prompt, negative, preset, style, tags ON generations BEGIN
        INSERT INTO generations_fts(generations_fts, rowid, prompt, negative, preset, style, tags)
        VALUES ('delete', old.id, old.prompt, old.negative, old.preset, old.style, old.tags);
        INSERT INTO generations_fts(rowid, prompt, negative, preset, style, tags)
        VALUES (new.id, new.prompt, new.negative, new.preset, new.style, new.tags);
    END;
    INSERT INTO generations_fts(generations_fts) VALUES ('rebuild');
    """,
    # 11: style codes: a short shareable code for a snapshot of a style or an image preset (guild or public).
    """
    CREATE TABLE style_codes (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('style','preset')),
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        guild_id INTEGER NOT NULL DEFAULT 0,
        public INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX style_codes_guild ON style_codes(guild_id, revoked_at);
    CREATE INDEX style_codes_user ON style_codes(user_id, revoked_at);
    """,
    # 12: jobs by time: the daily quota reads a user's last 24 hours, and a claim each waiting user's latest start
    # and the latest start of all, without scanning the history.
    """
    CREATE INDEX jobs_user_created ON jobs(user_id, created_at);
    CREATE INDEX jobs_user_started ON jobs(user_id, started_at);
    CREATE INDEX jobs_started ON jobs(started_at);
    """,
    # 13: the daily quota's count reads this index alone (no table row per job), so a submission's check stays
    # cheap however many jobs its user made today.
    """
    CREATE INDEX jobs_user_quota ON jobs(user_id, created_at, state, started_at);
    DROP INDEX jobs_user_created;
    """,
)

LATEST = len(MIGRATIONS)


def pending(current: int) -> list[tuple[int, str]]:
    """The (target_version, sql) steps still to apply after `current`."""
    if current > LATEST:
        raise RuntimeError(f"database schema version {current} is newer than this Atelier ({LATEST})")
    return [(i + 1, MIGRATIONS[i]) for i in range(current, LATEST)]
