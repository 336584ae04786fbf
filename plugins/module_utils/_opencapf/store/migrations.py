# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Versioned schema migrations, applied forward and in order when a store is opened.

Each migration is a list of statements run in one transaction together with the row that records
it, so a store is always at exactly one schema version. The same numbered list serves every
backend (SQLite, PostgreSQL): statements use portable SQL, with ``{id}`` for the dialect's
auto-increment primary key, ``{int}`` for its 64-bit integer and ``{blob}`` for its binary type
(SQLite renders them as the released statements always were) and ``{now}`` for the moment the
migration is applied (as ``vocabulary.format_utc`` writes it, the ``applied_at`` of its row);
``{append_only:TABLE}`` stands for the backend's triggers refusing UPDATE and DELETE, and
``{deletable:TABLE:COLUMN:PREFIX}`` for those triggers letting DELETE remove the rows whose COLUMN
starts with PREFIX (and no other). Never edit what a released migration does: add a new one.
"""

from __future__ import annotations

# Migration 21: why a key request that an earlier engine left ``pending`` once its phone's operation had
# succeeded is superseded (the reason of the request and of its ``csr.superseded`` audit event), and who
# records it. ASCII without quotes: it is written into SQL and JSON as it stands.
LEFT_AT_SUCCESS = ("left pending when another session of the phone completed its operation, by an engine that "
                   "superseded only the requests of the sessions then live (found at the upgrade to schema version "
                   "21): no session delivers a certificate for this request")
MIGRATION_ACTOR = "schema-migration"
_LEFT_AT_SUCCESS = "r.status = 'pending' AND p.operation_status = 'succeeded'"
# Migration 23: why an LSC that an earlier engine recorded ``issued`` for such a request, when its CA signed it
# after the phone's operation had succeeded, is stale (the reason of its ``certificate.stale`` audit event, and
# of the ``csr.superseded`` one of its request). ASCII without quotes, as LEFT_AT_SUCCESS.
ANSWERED_AFTER_SUCCESS = ("signed by its CA after another session of the phone had completed its operation, for a "
                          "request an engine that superseded only the requests of the sessions then live left pending "
                          "(found at the upgrade to schema version 23): the phone holds no key for it, and no session "
                          "delivers it")
# The LSCs so recorded (``a``, of the phone ``o``): of a third-party CA (a CAPF-issued LSC is signed in its
# session, which may have sent it to the phone), still ``issued``, of a phone whose operation succeeded, and
# recorded after that success. After it as the store tells it without a clock: no LSC the phone acknowledged
# (``installed_at``) is more recent, since the success of an install gave its LSC the phone's highest recency
# (``certificates.install``). When the success installed none (a delete, a troubleshoot), also by the clock: no
# ``phone.operation_succeeded`` event of the phone's name is later than the LSC's record (its issued_at, when
# the store recorded it), so that an LSC a session sent to the phone before a troubleshoot succeeded, never
# acknowledged and perhaps on the phone, is left as it is. (Recorded after the success, it was answered after
# it: a session sends no request once the operation succeeded.)
# A text column as the inside of a JSON string: its backslashes and double quotes escaped (a DN's RFC 4514 text
# escapes its special characters with backslashes, and may hold quotes; it holds no control character).
_JSON_TEXT = "replace(replace({}, '\\', '\\\\'), '\"', '\\\"')"
_ANSWERED_AFTER_SUCCESS = (
    "SELECT a.id FROM certificates a JOIN phones o ON o.id = a.phone_id LEFT JOIN (SELECT subject, MAX(at) AS at "
    "FROM audit_events WHERE action = 'phone.operation_succeeded' GROUP BY subject) s ON s.subject = o.name "
    "WHERE a.kind = 'lsc' AND a.status = 'issued' AND a.recency > 0 AND a.source IN ('online_ca', 'offline_ca') "
    "AND o.operation_status = 'succeeded' AND NOT EXISTS (SELECT 1 FROM certificates i WHERE i.phone_id = o.id "
    "AND i.kind = 'lsc' AND i.installed_at IS NOT NULL AND i.recency > a.recency) "
    "AND (o.operation = 'install_upgrade' OR s.at IS NULL OR s.at <= a.issued_at)")

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "initial schema", [
        """CREATE TABLE service_parameters (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE secrets (
            name TEXT PRIMARY KEY,
            nonce {blob} NOT NULL,
            ciphertext {blob} NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE capf_certificates (
            id {id},
            common_name TEXT NOT NULL,
            serial TEXT NOT NULL,
            fingerprint TEXT NOT NULL UNIQUE,
            key_type TEXT NOT NULL,
            key_path TEXT NOT NULL,
            pem TEXT NOT NULL,
            not_before TEXT NOT NULL,
            not_after TEXT NOT NULL,
            source TEXT NOT NULL,
            active {int} NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            retired_at TEXT
        )""",
        "CREATE UNIQUE INDEX capf_certificates_one_active ON capf_certificates (active) WHERE active = 1",
        """CREATE TABLE trust_certificates (
            id {id},
            trust_store TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            subject TEXT NOT NULL,
            common_name TEXT NOT NULL,
            issuer TEXT NOT NULL,
            is_ca {int} NOT NULL,
            not_after TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            pem TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (trust_store, fingerprint)
        )""",
        """CREATE TABLE phones (
            id {id},
            name TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '',
            device_pool TEXT NOT NULL DEFAULT '',
            security_mode TEXT NOT NULL DEFAULT 'non_secure',
            operation TEXT NOT NULL DEFAULT 'none',
            auth_mode TEXT NOT NULL DEFAULT 'null_string',
            auth_salt {blob},
            auth_hash {blob},
            auth_failures {int} NOT NULL DEFAULT 0,
            locked {int} NOT NULL DEFAULT 0,
            key_order TEXT NOT NULL DEFAULT 'rsa',
            rsa_key_size {int} NOT NULL DEFAULT 2048,
            ec_key_size {int} NOT NULL DEFAULT 256,
            operation_deadline TEXT,
            operation_status TEXT NOT NULL DEFAULT 'none',
            operation_reason TEXT NOT NULL DEFAULT '',
            last_session_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX phones_status ON phones (operation_status)",
        """CREATE TABLE certificates (
            id {id},
            phone_id {int} NOT NULL REFERENCES phones (id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            serial TEXT NOT NULL,
            issuer TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            public_key_fingerprint TEXT NOT NULL,
            status TEXT NOT NULL,
            source TEXT NOT NULL,
            pem TEXT NOT NULL,
            not_before TEXT NOT NULL,
            not_after TEXT NOT NULL,
            issued_at TEXT NOT NULL,
            installed_at TEXT,
            status_changed_at TEXT NOT NULL
        )""",
        "CREATE UNIQUE INDEX certificates_issued_serial ON certificates (issuer, serial)",
        "CREATE INDEX certificates_phone ON certificates (phone_id, kind, status)",
        "CREATE INDEX certificates_status_expiry ON certificates (status, not_after)",
        """CREATE TABLE csrs (
            id {id},
            phone_id {int} NOT NULL REFERENCES phones (id) ON DELETE CASCADE,
            public_key_fingerprint TEXT NOT NULL,
            public_key {blob} NOT NULL,
            csr_pem TEXT,
            status TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            external_ref TEXT,
            certificate_id {int} REFERENCES certificates (id) ON DELETE SET NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX csrs_status ON csrs (status, created_at)",
        """CREATE TABLE jobs (
            id {id},
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            spec TEXT NOT NULL,
            result TEXT NOT NULL DEFAULT '{{}}',
            run_at TEXT NOT NULL,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        )""",
        "CREATE INDEX jobs_due ON jobs (status, run_at)",
        """CREATE TABLE sessions (
            id {id},
            session_id {int} NOT NULL,
            device_name TEXT NOT NULL DEFAULT '',
            peer TEXT NOT NULL DEFAULT '',
            operation TEXT NOT NULL DEFAULT '',
            outcome TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            started_at TEXT NOT NULL,
            duration_ms {int} NOT NULL
        )""",
        "CREATE INDEX sessions_device ON sessions (device_name, started_at)",
        """CREATE TABLE audit_events (
            id {id},
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT NOT NULL DEFAULT '',
            details TEXT NOT NULL DEFAULT '{{}}'
        )""",
        "{append_only:audit_events}",
    ]),
    (2, "protocol server lookups", [
        # Existing-certificate authentication looks a presented LSC up by fingerprint (revoked?).
        "CREATE INDEX certificates_fingerprint ON certificates (fingerprint)",
        "CREATE INDEX sessions_started ON sessions (started_at)",
    ]),
    (3, "current LSC from one index", [
        # A phone's current LSC (its newest that is not stale) and the columns listings show of it,
        # read from this index alone: a certificate row carries a PEM, so reading 100,000 LSC rows
        # touches about as many table pages. ``kind`` is a key column so SQLite sees the index as
        # covering for queries that name it.
        "CREATE INDEX certificates_current_lsc ON certificates "
        "(phone_id, kind, id, status, not_after, serial, issued_at, installed_at) WHERE kind = 'lsc'",
    ]),
    (4, "retrieved certificates are copies, never a current LSC", [
        # A troubleshoot session's copy of a phone's certificate was an 'installed' row of kind 'lsc'
        # or 'mic': the newest, so it was taken for the phone's current LSC (and stayed installed
        # after a delete). It becomes a kind of its own, outside every LSC query and index.
        "UPDATE certificates SET kind = 'retrieved_' || kind, status = 'retrieved', installed_at = NULL "
        "WHERE source = 'troubleshoot' AND kind IN ('lsc', 'mic')",
    ]),
    (5, "commit counter for stores shared by several hosts", [
        # Raised by every write transaction that changed something, where the database has no cheap
        # counter of its own (PostgreSQL; SQLite's PRAGMA data_version needs none).
        "CREATE TABLE commit_counter (id {int} PRIMARY KEY CHECK (id = 1), version {int} NOT NULL)",
        "INSERT INTO commit_counter (id, version) VALUES (1, 0)",
    ]),
    (6, "session bounds and the chains of third-party LSCs", [
        # When the session that put a phone's operation in progress has ended at the latest (its time
        # bound): past it, an operation still in progress has no live session and is settled.
        "ALTER TABLE phones ADD COLUMN operation_live_until TEXT",
        # The CA certificates between a third-party LSC and CAPF-trust that the CA sent along, so that
        # the LSC can be checked again when it is delivered.
        "ALTER TABLE certificates ADD COLUMN chain_pem TEXT",
    ]),
    (7, "certificate monitor", [
        # The expiry warnings the monitor has sent: once per certificate and threshold (days before
        # expiry; 0 stands for "expired").
        """CREATE TABLE monitor_warnings (
            fingerprint TEXT NOT NULL,
            threshold {int} NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT NOT NULL,
            not_after TEXT NOT NULL,
            sent_at TEXT NOT NULL,
            PRIMARY KEY (fingerprint, threshold)
        )""",
        "CREATE INDEX monitor_warnings_not_after ON monitor_warnings (not_after)",
        # One row per check: when, what it found, what it sent, and why a mail failed.
        """CREATE TABLE monitor_runs (
            id {id},
            checked_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            result TEXT NOT NULL,
            found {int} NOT NULL,
            warnings {int} NOT NULL,
            mails_sent {int} NOT NULL,
            attempts {int} NOT NULL,
            failures {int} NOT NULL,
            error TEXT NOT NULL DEFAULT ''
        )""",
    ]),
    (8, "revocation reasons and the CRL", [
        # Why and when an LSC was revoked (an RFC 5280 reason, vocabulary.REVOCATION_REASONS): the CRL
        # lists both. LSCs revoked before: a newer LSC of the phone followed them (superseded), or else a
        # delete operation removed them (cessation of operation); they were revoked when their status changed.
        "ALTER TABLE certificates ADD COLUMN revocation_reason TEXT",
        "ALTER TABLE certificates ADD COLUMN revoked_at TEXT",
        "UPDATE certificates SET revoked_at = status_changed_at, revocation_reason = CASE WHEN EXISTS ("
        "SELECT 1 FROM certificates n WHERE n.phone_id = certificates.phone_id AND n.kind = 'lsc' "
        "AND n.id > certificates.id AND n.status IN ('installed', 'revoked')) THEN 'superseded' "
        "ELSE 'cessation_of_operation' END WHERE kind = 'lsc' AND status = 'revoked'",
        "CREATE INDEX certificates_revoked ON certificates (issuer, status, revoked_at)",
        # The revoked LSCs of phones removed from the store (their certificate rows go with them): the
        # CRL keeps listing them.
        """CREATE TABLE removed_phone_lscs (
            id {id},
            device_name TEXT NOT NULL,
            serial TEXT NOT NULL,
            issuer TEXT NOT NULL,
            source TEXT NOT NULL,
            pem TEXT NOT NULL,
            not_after TEXT NOT NULL,
            revoked_at TEXT NOT NULL,
            revocation_reason TEXT NOT NULL
        )""",
        "CREATE INDEX removed_phone_lscs_issuer ON removed_phone_lscs (issuer, revoked_at)",
        # Every CRL the service signed: its number never repeats and only grows (RFC 5280 5.2.3), and
        # every node serves the newest one. ``revocation_mark`` tells whether LSCs were revoked since.
        """CREATE TABLE crls (
            number {int} PRIMARY KEY,
            signer_fingerprint TEXT NOT NULL,
            this_update TEXT NOT NULL,
            next_update TEXT NOT NULL,
            entries {int} NOT NULL,
            revocation_mark TEXT NOT NULL,
            der {blob} NOT NULL,
            created_at TEXT NOT NULL
        )""",
    ]),
    (9, "automatic renewals", [
        # One row per LSC that automatic renewal scheduled a new one for: an LSC is renewed once, and
        # the rows of the last 24 hours (by the renewal's own clock) bound how many it schedules a day.
        """CREATE TABLE renewals (
            id {id},
            phone_id {int} NOT NULL REFERENCES phones (id) ON DELETE CASCADE,
            certificate_id {int} NOT NULL UNIQUE,
            scheduled_at TEXT NOT NULL
        )""",
        "CREATE INDEX renewals_scheduled ON renewals (scheduled_at)",
    ]),
    (10, "device templates", [
        # Named sets of CAPF settings for phones (``templates``): the settings as JSON by option name,
        # never a secret (a template's shared authentication string is sealed in ``secrets``).
        """CREATE TABLE device_templates (
            id {id},
            name TEXT NOT NULL UNIQUE,
            settings TEXT NOT NULL DEFAULT '{{}}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
    ]),
    (11, "LDAP directories and the devices their syncs created", [
        # One row per directory configuration (its bind password is a sealed secret, never here):
        # when it was first synchronised (the template applies to every device of that first sync)
        # and when it is next due for the service's scheduled sync.
        """CREATE TABLE directories (
            id {id},
            name TEXT NOT NULL UNIQUE,
            config TEXT NOT NULL,
            first_synced_at TEXT,
            last_synced_at TEXT,
            next_sync_at TEXT,
            last_result TEXT NOT NULL DEFAULT '{{}}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX directories_due ON directories (next_sync_at)",
        # The devices a directory's entries map to, with the entry each came from: a device whose
        # entry left the directory is one of these that the next sync no longer finds.
        """CREATE TABLE directory_devices (
            directory_id {int} NOT NULL REFERENCES directories (id) ON DELETE CASCADE,
            device_name TEXT NOT NULL,
            entry_dn TEXT NOT NULL,
            PRIMARY KEY (directory_id, device_name)
        )""",
    ]),
    (12, "the revoked-LSC index holds revoked certificates only", [
        # Every query of revoked LSCs (the CRL, its revocation mark, the revocation listings) names
        # status = 'revoked'; no other query reads this index. Holding only those rows, an LSC that is
        # issued or installed no longer writes an index page at its issuance and another at its
        # installation (each a page of the write-ahead log).
        "DROP INDEX certificates_revoked",
        "CREATE INDEX certificates_revoked ON certificates (issuer, revoked_at) WHERE status = 'revoked'",
    ]),
    (13, "a phone's current LSC is the one it was last issued or last installed", [
        # A phone's current LSC was its newest by issue (the highest id) that is not stale. Two sessions
        # of one device that overlap (a phone reconnecting while its old session still waits) may have
        # their LSCs installed in the other order: the phone then holds the older one, installed, and
        # the newer one is revoked as superseded, yet it was still taken for the current LSC (the
        # listings, the reports, the renewal scheduler). ``recency`` orders a phone's certificates by
        # the last of their issue and their installation: each takes the phone's highest plus one.
        "ALTER TABLE certificates ADD COLUMN recency {int} NOT NULL DEFAULT 0",
        "UPDATE certificates SET recency = 2 * id",
        # A store that already went through such an order: its installed LSC was installed after
        # every newer LSC that was revoked as superseded (its installation revoked them, or one before
        # it did). It goes just after the newest of them, before any LSC issued later.
        "UPDATE certificates SET recency = 2 * (SELECT MAX(n.id) FROM certificates n WHERE n.phone_id = "
        "certificates.phone_id AND n.kind = 'lsc' AND n.id > certificates.id AND n.status = 'revoked' "
        "AND n.revocation_reason = 'superseded') + 1 WHERE kind = 'lsc' AND status = 'installed' AND EXISTS ("
        "SELECT 1 FROM certificates n WHERE n.phone_id = certificates.phone_id AND n.kind = 'lsc' "
        "AND n.id > certificates.id AND n.status = 'revoked' AND n.revocation_reason = 'superseded')",
        "DROP INDEX certificates_current_lsc",
        "CREATE INDEX certificates_current_lsc ON certificates "
        "(phone_id, kind, recency, id, status, not_after, serial, issued_at, installed_at) WHERE kind = 'lsc'",
    ]),
    (14, "a stale LSC is never a phone's current one, even revoked", [
        # A stale LSC (never installed, not on the phone) that an operator revokes by its serial
        # became a revoked LSC like any other, and the phone's current one when no more recent LSC
        # followed it. Stale LSCs have recency 0 from now on, which no current LSC has.
        "UPDATE certificates SET recency = 0 WHERE status = 'stale'",
    ]),
    (15, "a phone removed and added again is another phone", [
        # SQLite gives a new row the highest rowid plus one: the newest phone, removed and added again
        # under its name, got its old id back, with the same created_at when within one second. A
        # session that read the old row then took the new one for its own phone (and recorded its
        # installation and result there). A phone row is its (id, incarnation): on SQLite each row takes a
        # random incarnation once inserted; PostgreSQL never gives an id twice.
        "ALTER TABLE phones ADD COLUMN incarnation {int} NOT NULL DEFAULT 0",
        "{incarnations:phones}",
    ]),
    (16, "directory sync tickets", [
        # Two syncs of one directory at once (the service's schedule and an operator, or two hosts of one
        # store) each read the directory, then apply what they read: the one that read first could apply
        # last and put the directory's older state back. Each sync takes the directory's next ticket
        # (``taken``) in a write transaction before it reads, and applies only when no sync of a later
        # ticket has applied (``applied``). By name: a directory's first sync takes its ticket before the
        # directory has a row.
        """CREATE TABLE directory_syncs (
            name TEXT PRIMARY KEY,
            taken {int} NOT NULL DEFAULT 0,
            applied {int} NOT NULL DEFAULT 0
        )""",
    ]),
    (17, "the directory sync that gave the bind password kept", [
        # A sync given a bind password whose bind succeeded keeps it even when a later reading applied
        # first (superseded), unless a sync of a later ticket was given one: ``password`` is the ticket of
        # the latest sync given a password that bound with it and ended.
        "ALTER TABLE directory_syncs ADD COLUMN password {int} NOT NULL DEFAULT 0",
    ]),
    (18, "LSCs revoked for their expiry, found without reading every revoked one", [
        # Automatic renewal also takes a phone's current LSC that expired installed and was revoked for
        # it (``store/renewals``), at every round of the scheduler; LSCs revoked as superseded by their
        # renewal, which outnumber the fleet over the years, are not in this index. An LSC issued,
        # installed or revoked for another reason writes no page of it.
        "CREATE INDEX certificates_expired_revoked ON certificates (not_after) "
        "WHERE revocation_reason = 'cessation_of_operation'",
    ]),
    (19, "a revoked LSC leaves the CRL once a CRL listed it beyond its validity", [
        # RFC 5280 3.3: an entry may leave the CRL once it appeared on one CRL issued beyond the revoked
        # certificate's validity period. ``delisted_after_crl`` is the number of the CRL after which the
        # CRLs leave it out (NULL while they list it; revocation.refresh_crls sets it). Every renewal
        # revokes an LSC (superseded): the CRL and its revocation mark read the revoked LSCs still listed
        # from these indexes, which those delisted leave, not every LSC revoked over the years.
        "ALTER TABLE certificates ADD COLUMN delisted_after_crl {int}",
        "ALTER TABLE removed_phone_lscs ADD COLUMN delisted_after_crl {int}",
        "CREATE INDEX certificates_crl_entries ON certificates (issuer, revoked_at) "
        "WHERE status = 'revoked' AND delisted_after_crl IS NULL",
        "CREATE INDEX removed_phone_lscs_crl_entries ON removed_phone_lscs (issuer, revoked_at) "
        "WHERE delisted_after_crl IS NULL",
        # A CRL signed by a host whose clock is behind the one that delisted an LSC lists it again while it
        # is valid at that CRL's thisUpdate: those are found by their notAfter.
        "CREATE INDEX certificates_delisted ON certificates (issuer, not_after) "
        "WHERE status = 'revoked' AND delisted_after_crl IS NOT NULL",
        "CREATE INDEX removed_phone_lscs_delisted ON removed_phone_lscs (issuer, not_after) "
        "WHERE delisted_after_crl IS NOT NULL",
    ]),
    (20, "the newest revoked LSCs, read without reading every revoked one", [
        # capf_info's revoked_lscs reads the newest revoked LSCs of every issuer (certificates.revoked_lscs):
        # read newest first from this index, not all of those the renewals of the years revoked. Its
        # second condition holds for every row (the column is NOT NULL) and is stated by that query alone,
        # so no other query's plan can take this index: SQLite would read the CRL's entries by it (kind
        # and status equal) rather than by the index of those the CRL still lists.
        "CREATE INDEX certificates_revoked_newest ON certificates (kind, status, revoked_at) "
        "WHERE status = 'revoked' AND status_changed_at IS NOT NULL",
    ]),
    (21, "no key request is left pending once its phone's operation succeeded", [
        # The session that records a phone's operation ``succeeded`` supersedes every request of the phone
        # still pending (``csrs.supersede_at_success``), and counts them with the phone's row at the
        # session's end: a seek in this index, not a read of the pending requests of every phone.
        "CREATE INDEX csrs_phone_status ON csrs (phone_id, status)",
        # An earlier engine superseded only the requests of the sessions that may have been live then: a
        # request an earlier session left at a CA as it ended deferred stayed pending for good once the phone
        # got its LSC elsewhere (the issuer switched to the CAPF, or the CA never answered), listed as
        # waiting, polled by the enrolment service and exported, and a certificate for it would have been
        # recorded as the phone's LSC. No session sends a request while the operation is succeeded
        # (``decider.StoreDecider._withdrawn``): every pending request of such a phone is one of those. Each is
        # superseded with its csr.superseded audit event, as a success supersedes it now.
        "INSERT INTO audit_events (at, actor, action, subject, details) "
        f"SELECT '{{now}}', '{MIGRATION_ACTOR}', 'csr.superseded', p.name, "
        f"'{{{{\"csr_id\": ' || r.id || ', \"reason\": \"{LEFT_AT_SUCCESS}\"}}}}' "
        f"FROM csrs r JOIN phones p ON p.id = r.phone_id WHERE {_LEFT_AT_SUCCESS} ORDER BY r.id",
        f"UPDATE csrs SET status = 'superseded', reason = '{LEFT_AT_SUCCESS}', updated_at = '{{now}}' "
        "WHERE id IN (SELECT r.id FROM csrs r JOIN phones p ON p.id = r.phone_id "
        f"WHERE {_LEFT_AT_SUCCESS})",
    ]),
    (22, "session records removed once past their retention", [
        # Every connection writes a sessions row and a session.* audit event (refused ones and TLS
        # failures too), which the scheduler removes once older than ``session_retention_days``; every
        # other audit event is still never updated nor removed (the database refuses it). The session
        # events past the retention are found from this index, not by reading the whole log.
        "{deletable:audit_events:action:session.}",
        "CREATE INDEX audit_events_session_at ON audit_events (at) WHERE substr(action, 1, 8) = 'session.'",
    ]),
    (23, "no certificate a CA signed after its phone's operation succeeded is the phone's LSC", [
        # Before migration 21, a CA's later answer to a request left pending at a success was recorded as an
        # ``issued`` LSC with the phone's highest recency: the phone's current LSC (listings, reports, capf_info,
        # the renewal scheduler) for a key the phone no longer holds, and delivered as the phone's pending key by
        # its next session once the operator armed the operation again (``enrolment.next_for_phone``). Each is
        # stale now (recency 0: never current again), as a CA's answer to a superseded request is recorded now,
        # with its certificate.stale audit event; its request, ``issued``, superseded with its csr.superseded one.
        "INSERT INTO audit_events (at, actor, action, subject, details) "
        f"SELECT '{{now}}', '{MIGRATION_ACTOR}', 'csr.superseded', p.name, "
        f"'{{{{\"csr_id\": ' || r.id || ', \"reason\": \"{ANSWERED_AFTER_SUCCESS}\"}}}}' "
        "FROM csrs r JOIN phones p ON p.id = r.phone_id WHERE r.status = 'issued' "
        f"AND r.certificate_id IN ({_ANSWERED_AFTER_SUCCESS}) ORDER BY r.id",
        f"UPDATE csrs SET status = 'superseded', reason = '{ANSWERED_AFTER_SUCCESS}', updated_at = '{{now}}' "
        f"WHERE status = 'issued' AND certificate_id IN ({_ANSWERED_AFTER_SUCCESS})",
        "INSERT INTO audit_events (at, actor, action, subject, details) "
        f"SELECT '{{now}}', '{MIGRATION_ACTOR}', 'certificate.stale', p.name, "
        f"'{{{{\"certificate_id\": ' || c.id || ', \"issuer\": \"' || {_JSON_TEXT.format('c.issuer')} || '\", "
        f"\"not_after\": \"' || c.not_after || '\", \"reason\": \"{ANSWERED_AFTER_SUCCESS}\", \"serial\": \"' "
        f"|| c.serial || '\", \"source\": \"' || c.source || '\"}}}}' "
        f"FROM certificates c JOIN phones p ON p.id = c.phone_id WHERE c.id IN ({_ANSWERED_AFTER_SUCCESS}) ORDER BY c.id",
        f"UPDATE certificates SET status = 'stale', recency = 0, status_changed_at = '{{now}}' "
        f"WHERE id IN ({_ANSWERED_AFTER_SUCCESS})",
    ]),
]

LATEST_VERSION = MIGRATIONS[-1][0]
