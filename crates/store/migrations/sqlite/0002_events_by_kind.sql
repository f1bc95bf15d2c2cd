-- An agent's events of one kind (its queue memberships at start-up, its last status)
-- without reading all of its events.
CREATE INDEX events_by_kind ON events (correlation, kind, seq);
