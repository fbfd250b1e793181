#!/usr/bin/env python3
# WAL frames per commit of the store's schema (lmsrt_events and its indexes, as in
# src/store/schema.rs), 4 events per commit on 100 random channels as the daemon's appender
# groups them with 8 HTTP publishers; `auto` with AUTOINCREMENT (the store), `plain` without.
# usage: python3 benches/wal-frames.py auto|plain [CHANNELS, 100]   (benches/journal/2026-12-07-publish-cpu.md)
import os, random, shutil, sqlite3, sys, tempfile
d=tempfile.mkdtemp()
p=d + '/f.db'
c=sqlite3.connect(p, isolation_level=None)
c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA synchronous=NORMAL'); c.execute('PRAGMA wal_autocheckpoint=0')
auto = sys.argv[1] == 'auto'
CH = int(sys.argv[2]) if len(sys.argv) > 2 else 100
c.executescript(f"""
CREATE TABLE lmsrt_events (
    id          INTEGER PRIMARY KEY {'AUTOINCREMENT' if auto else ''},
    event_type  TEXT    NOT NULL, priority INTEGER NOT NULL, channel_id  INTEGER NOT NULL,
    message_id  INTEGER, thread_id INTEGER, user_id INTEGER NOT NULL, data TEXT NOT NULL,
    timestamp   INTEGER NOT NULL, expires_at  INTEGER NOT NULL, idem_key TEXT);
CREATE INDEX lmsrt_events_lane   ON lmsrt_events (channel_id, priority, id, expires_at);
CREATE INDEX lmsrt_events_expiry ON lmsrt_events (expires_at);
CREATE UNIQUE INDEX lmsrt_events_idem ON lmsrt_events (idem_key) WHERE idem_key IS NOT NULL;
""")
for i in range(2000):
    c.execute('BEGIN')
    for j in range(4):
        c.execute('INSERT INTO lmsrt_events(event_type,priority,channel_id,user_id,data,timestamp,expires_at) VALUES(?,?,?,?,?,?,?)',
          ('message',2,random.randint(1,CH),1,'{"x":"'+'a'*120+'"}',1000+i,100000+i))
    c.execute('COMMIT')
w0=os.path.getsize(p+'-wal')
N=2000
for i in range(N):
    c.execute('BEGIN')
    for j in range(4):
        c.execute('INSERT INTO lmsrt_events(event_type,priority,channel_id,user_id,data,timestamp,expires_at) VALUES(?,?,?,?,?,?,?)',
          ('message',2,random.randint(1,CH),1,'{"x":"'+'a'*120+'"}',3000+i,200000+i))
    c.execute('COMMIT')
print(sys.argv[1], CH, 'channels: frames per commit', (os.path.getsize(p+'-wal')-w0)/4120/N)
c.close()
shutil.rmtree(d)
