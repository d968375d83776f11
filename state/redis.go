package state

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/tetherproxy/tether/internal/redact"
)

// RedisOptions configure a Redis store. Zero durations take the defaults
// noted.
type RedisOptions struct {
	// URL is the server, as redis.ParseURL takes it: redis://[user:pass@]
	// host:port[/db] or rediss:// for TLS. The store sets its own timeouts
	// whatever the URL's query says.
	URL string
	// Username and Password, when set, override the URL's.
	Username, Password string
	// TLS, when set, is the client's TLS configuration (and turns TLS on
	// whatever the scheme); nil takes it from the scheme (rediss:// is TLS
	// with the system roots). An empty ServerName is the URL's host.
	TLS *tls.Config
	// KeyPrefix starts every key the store writes ("tether:", say).
	KeyPrefix string
	// Timeout bounds each round trip, dial included (default 200ms).
	Timeout time.Duration
	// LeaseTTL is how long a lease outlives the last refresh of the replica
	// holding it (default 15s); a replica refreshes its leases every
	// LeaseTTL/3, so a replica that dies frees its sessions within LeaseTTL.
	LeaseTTL time.Duration
	// FlushInterval is how often queued usage is sent (default 500ms).
	FlushInterval time.Duration
	// Window is the length of the usage windows (default 24h): a usage key
	// expires 2*Window+1h after its last write.
	Window time.Duration
	// FailClosed refuses admissions (Admit returns an error wrapping
	// ErrUnavailable) when Redis does not answer; false (fail_open) admits
	// by this replica's own counts.
	FailClosed bool
	// Logger receives a warning, at most once a minute, when Redis fails
	// (nil: slog.Default()).
	Logger *slog.Logger
	// OnError, if set, is called once for each failed round trip with the
	// operation: "admit", "flush", "refresh", "release" or "status". It must
	// not block.
	OnError func(op string)
}

// The operations OnError names.
const (
	opAdmit   = "admit"
	opFlush   = "flush"
	opRefresh = "refresh"
	opRelease = "release"
	opStatus  = "status"
)

// warnEvery bounds how often a failing store logs a warning.
const warnEvery = time.Minute

// Redis is a Store shared by every replica of a fleet through one Redis
// server. Keys, with p the KeyPrefix:
//
//	p+"sessions:"+client          ZSET: member a lease, score its expiry
//	                              (Unix ms, Redis server time)
//	p+"usage:"+client+":"+window  HASH: tokens, audio_ms, cost_nano (the
//	                              window's totals; window is its start in
//	                              Unix seconds), born and v (when the key was
//	                              made and how many batches it took, to order
//	                              replies) and one seq:<replica> per replica
//	                              (the last batch of it counted)
//
// Admit and Status are one round trip each (a Lua script, so the checks
// and the lease are atomic across the fleet). Add only queues: a
// goroutine sends the queued usage every FlushInterval and refreshes this
// replica's leases every LeaseTTL/3. Each batch of usage carries a number
// that Redis records, so a batch whose reply was lost is sent again without
// being counted twice. Spent answers from the fleet's totals as the last
// reply gave them plus what is not yet counted there.
//
// When Redis does not answer within Timeout, Admit refuses (FailClosed) or
// admits by a process-local Memory that mirrors this replica's leases and
// usage (Verdict.Local); queued usage stays queued and leases taken
// meanwhile are registered by the next refresh, so the fleet's counts
// converge when Redis is back. A Redis that lost its data (restarted
// without persistence) counts from what was queued since.
//
// The scripts touch keys of one client at a time but two keys per call, so
// a Redis Cluster needs both in one slot: not supported.
type Redis struct {
	opts     RedisOptions
	rdb      *redis.Client
	local    *Memory
	log      *slog.Logger
	where    string // the URL without credentials
	redactor *redact.Redactor
	seqField string // this replica's batch field in a usage hash
	ttlMs    int64
	expireMs int64

	mu       sync.Mutex
	pending  map[redisKey]*pending
	fleet    map[redisKey]snapshot
	windows  windows
	releases []leaseRef
	seq      uint64

	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	down       atomic.Bool
	warnMu     sync.Mutex
	lastWarn   time.Time
	suppressed int
}

// redisKey names one client's usage in one window (start in Unix seconds).
type redisKey struct {
	client string
	start  int64
}

type leaseRef struct{ client, lease string }

// counts is usage in the units Redis keeps: tokens, audio milliseconds and
// nano-USD.
type counts struct{ tokens, audioMs, costNano int64 }

func countsOf(u Usage) counts {
	return counts{u.Tokens, int64(math.Round(u.AudioSeconds * 1e3)), int64(math.Round(u.CostUSD * 1e9))}
}

func (c counts) usage() Usage {
	return Usage{Tokens: c.tokens, AudioSeconds: float64(c.audioMs) / 1e3, CostUSD: float64(c.costNano) / 1e9}
}

func (c counts) isZero() bool { return c == counts{} }

// budgetCounts converts a budget, keeping a bound that rounds to 0 a bound
// (of one unit) rather than unlimited.
func budgetCounts(u Usage) counts {
	c := countsOf(u)
	if u.AudioSeconds > 0 && c.audioMs < 1 {
		c.audioMs = 1
	}
	if u.CostUSD > 0 && c.costNano < 1 {
		c.costNano = 1
	}
	return c
}

// pending is usage of one client in one window not yet counted in Redis.
type pending struct {
	// queued is not yet in a batch; it keeps the sub-unit remainder of what
	// the last batch took.
	queued Usage
	// inflight is the batch numbered seq, sent and not yet acknowledged
	// (seq 0: none). It is sent again, with the same number, until a reply
	// comes back.
	inflight counts
	seq      uint64
}

// snapshot is a client's usage in a window as a reply from Redis gave it.
type snapshot struct {
	total   counts
	applied uint64 // the last batch of this replica that total counts
	born    int64  // when Redis made the key (µs; 0 when it had none)
	version int64  // batches the key took since
}

// newer reports whether s is at least as recent as t: a key made later (the
// earlier one expired or was lost) or the same key after as many batches.
func (s snapshot) newer(t snapshot) bool {
	return s.born > t.born || s.born == t.born && s.version >= t.version
}

// luaNow sets now to Redis's clock in Unix milliseconds (replicating the
// effects, not the script, as Redis before 5 needs told).
const luaNow = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// luaExtend makes the sessions key outlive its newest lease (ttl ms from
// now) without shortening an expiry another replica set.
const luaExtend = `
local function extend(key, ttl)
	if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
`

// luaUsageFields are the fields of a usage hash a reply carries: the totals,
// this replica's last batch counted, born and v.
const luaUsageFields = `'tokens', 'audio_ms', 'cost_nano', ARGV[1], 'born', 'v'`

// admitScript: KEYS sessions, usage; ARGV seq field, lease, ttl ms,
// max sessions, budget tokens, audio ms, cost nano. Replies {limit, live
// sessions but this lease, the six usage fields}; limit 0 took the lease.
var admitScript = redis.NewScript(luaNow + luaExtend + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then live = live - 1 end
local u = redis.call('HMGET', KEYS[2], ` + luaUsageFields + `)
local max, bt, ba, bc = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local limit = 0
if bt > 0 and (tonumber(u[1]) or 0) >= bt then limit = 1
elseif ba > 0 and (tonumber(u[2]) or 0) >= ba then limit = 2
elseif bc > 0 and (tonumber(u[3]) or 0) >= bc then limit = 3
elseif max > 0 and live >= max then limit = 4
else
	local ttl = tonumber(ARGV[3])
	redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
	extend(KEYS[1], ttl)
end
return {limit, live, u[1], u[2], u[3], u[4], u[5], u[6]}
`)

// admitLimits maps the admit script's limit codes.
var admitLimits = [...]Limit{LimitNone, LimitTokens, LimitAudioSeconds, LimitCost, LimitSessions}

// statusScript: KEYS sessions, usage; ARGV seq field. Replies {live
// sessions, the six usage fields}.
var statusScript = redis.NewScript(luaNow + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local u = redis.call('HMGET', KEYS[2], ` + luaUsageFields + `)
return {redis.call('ZCARD', KEYS[1]), u[1], u[2], u[3], u[4], u[5], u[6]}
`)

// refreshScript: KEYS sessions; ARGV ttl ms, leases... (re)sets each
// lease's expiry to ttl from now.
var refreshScript = redis.NewScript(luaNow + luaExtend + `
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
extend(KEYS[1], ttl)
return #ARGV - 1
`)

// flushScript: KEYS usage; ARGV seq field, batch number, tokens, audio ms,
// cost nano, expiry ms. Counts the batch unless this replica's field says
// it was counted, and replies the six usage fields.
var flushScript = redis.NewScript(`
local seq = tonumber(ARGV[2])
if seq > (tonumber(redis.call('HGET', KEYS[1], ARGV[1])) or 0) then
	if redis.call('EXISTS', KEYS[1]) == 0 then
		if redis.replicate_commands then redis.replicate_commands() end
		local t = redis.call('TIME')
		redis.call('HSET', KEYS[1], 'born', t[1] .. string.format('%06d', tonumber(t[2])))
	end
	if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[3]) end
	if ARGV[4] ~= '0' then redis.call('HINCRBY', KEYS[1], 'audio_ms', ARGV[4]) end
	if ARGV[5] ~= '0' then redis.call('HINCRBY', KEYS[1], 'cost_nano', ARGV[5]) end
	redis.call('HINCRBY', KEYS[1], 'v', 1)
	redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
	redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
return redis.call('HMGET', KEYS[1], ` + luaUsageFields + `)
`)

// NewRedis returns a store on the Redis server opts.URL names and starts
// its goroutine. It does not connect: a server that is down is only a
// failure at the first round trip. A URL that does not parse is an error
// (with the URL's credentials left out).
//
// The first call also routes go-redis's own log lines, process-wide, to
// slog.Default() at Debug level (the store warns about failures itself).
// CheckURL reports what is wrong with raw as the URL of NewRedis (config
// validation uses it, so a file that validates also serves): it must parse
// as go-redis parses it, name a port from 1 to 65535 and hold no password.
// The error never quotes the URL.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("does not parse as a URL")
	}
	if _, set := u.User.Password(); set {
		return errors.New("must not hold the password: use state.redis.password_file or password_env")
	}
	if q := u.Query(); q.Has("password") {
		return errors.New("must not hold the password (a password= parameter): use state.redis.password_file or password_env")
	}
	o, err := redis.ParseURL(raw)
	if err != nil {
		return fmt.Errorf("is not a Redis URL: %s", strings.TrimPrefix(err.Error(), "redis: "))
	}
	if _, port, err := net.SplitHostPort(o.Addr); err == nil {
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("port must be a number from 1 to 65535 (got %q)", port)
		}
	}
	return nil
}

func NewRedis(opts RedisOptions) (*Redis, error) {
	opts.Timeout = cmp.Or(opts.Timeout, 200*time.Millisecond)
	opts.LeaseTTL = cmp.Or(opts.LeaseTTL, 15*time.Second)
	opts.FlushInterval = cmp.Or(opts.FlushInterval, 500*time.Millisecond)
	opts.Window = cmp.Or(opts.Window, 24*time.Hour)
	if opts.Timeout < 0 || opts.LeaseTTL < 3*time.Millisecond || opts.FlushInterval < 0 || opts.Window < 0 {
		return nil, errors.New("state: redis: negative or too short duration")
	}
	u, err := url.Parse(opts.URL)
	if err != nil {
		// Not even the URL's credentials can be told apart: say nothing of it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("state: the redis URL does not parse: %s", redact.New(opts.Password).Redact(err.Error()))
	}
	secrets := []string{opts.Password}
	if p, ok := u.User.Password(); ok {
		secrets = append(secrets, p)
	}
	red := redact.New(secrets...)
	where := redact.URL(opts.URL)
	o, err := redis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("state: redis URL %s: %s", where, red.Redact(err.Error()))
	}
	if opts.Username != "" {
		o.Username = opts.Username
	}
	if opts.Password != "" {
		o.Password = opts.Password
	}
	if opts.TLS != nil {
		c := opts.TLS.Clone()
		if c.ServerName == "" {
			if host, _, err := net.SplitHostPort(o.Addr); err == nil {
				c.ServerName = host
			}
		}
		o.TLSConfig = c
	}
	o.Protocol = 2
	o.DialTimeout = opts.Timeout
	o.ReadTimeout = opts.Timeout
	o.WriteTimeout = opts.Timeout
	o.PoolTimeout = opts.Timeout
	o.ContextTimeoutEnabled = true
	o.DialerRetries = 1
	o.MaxRetries = 1 // every script is safe to run twice
	o.DisableIdentity = true
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	routeRedisLogs.Do(func() { redis.SetLogger(redisLogger{}) })

	id := make([]byte, 8)
	_, _ = rand.Read(id)
	s := &Redis{
		opts:     opts,
		rdb:      redis.NewClient(o),
		local:    NewMemory(),
		log:      cmp.Or(opts.Logger, slog.Default()),
		where:    where,
		redactor: red,
		seqField: "seq:" + hex.EncodeToString(id),
		ttlMs:    max(opts.LeaseTTL.Milliseconds(), 1),
		expireMs: (2*opts.Window + time.Hour).Milliseconds(),
		pending:  map[redisKey]*pending{},
		fleet:    map[redisKey]snapshot{},
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go s.run()
	return s, nil
}

var routeRedisLogs sync.Once

// redisLogger sends go-redis's log lines to slog at Debug level.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().DebugContext(ctx, "go-redis: "+redact.New().Redact(fmt.Sprintf(format, v...)))
}

func (s *Redis) sessionsKey(client string) string { return s.opts.KeyPrefix + "sessions:" + client }

func (s *Redis) usageKey(k redisKey) string {
	return s.opts.KeyPrefix + "usage:" + k.client + ":" + strconv.FormatInt(k.start, 10)
}

func keyAt(client string, window time.Time) redisKey {
	return redisKey{client: client, start: window.Unix()}
}

// Admit runs the admission script: one round trip within Timeout. When
// Redis does not answer it admits by this replica's counts (Verdict.Local;
// budgets are checked against the larger of this replica's usage and
// Spent) or, with FailClosed, returns an error wrapping ErrUnavailable. A
// ctx that ends first is returned as it is.
func (s *Redis) Admit(ctx context.Context, req Request) (Verdict, error) {
	if s.closed.Load() {
		return Verdict{}, fmt.Errorf("%w: the store is closed", ErrUnavailable)
	}
	k := keyAt(req.Client, req.Window)
	s.mu.Lock()
	s.observeLocked(k.start)
	s.mu.Unlock()
	b := budgetCounts(req.Budget)
	rctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	vals, err := replyInts(admitScript.Run(rctx, s.rdb,
		[]string{s.sessionsKey(req.Client), s.usageKey(k)},
		s.seqField, req.Lease, s.ttlMs, max(req.MaxSessions, 0), b.tokens, b.audioMs, b.costNano), 8)
	cancel()
	if err == nil && (vals[0] < 0 || vals[0] >= int64(len(admitLimits))) {
		err = fmt.Errorf("admit script replied limit %d", vals[0])
	}
	if err != nil {
		// The script may have taken the lease before the reply was lost:
		// give it back, unless this replica already held it.
		undo := func() {
			if !s.local.holds(req.Client, req.Lease) {
				s.queueRelease(req.Client, req.Lease)
			}
		}
		if ctx.Err() != nil {
			undo()
			return Verdict{}, fmt.Errorf("state: admit: %w", ctx.Err())
		}
		s.failed(opAdmit, err)
		if s.opts.FailClosed {
			undo()
			return Verdict{}, s.unavailable(err)
		}
		v := s.local.admit(req, s.Spent(req.Client, req.Window))
		v.Local = true
		if !v.Admitted {
			undo() // refused here: a lease the script may have taken goes back
		}
		return v, nil
	}
	s.recovered()
	s.learn(k, snapshotOf(vals[2:]))
	v := Verdict{Limit: admitLimits[vals[0]], Sessions: int(vals[1]), Spent: s.Spent(req.Client, req.Window)}
	if v.Limit == LimitNone {
		v.Admitted = true
		s.local.hold(req.Client, req.Lease)
	}
	return v, nil
}

// Release drops the lease from this replica at once (it is no longer
// refreshed) and queues its removal from Redis; if that fails, the lease
// expires within LeaseTTL.
func (s *Redis) Release(client, lease string) {
	if s.local.release(client, lease) {
		s.queueRelease(client, lease)
	}
}

func (s *Redis) queueRelease(client, lease string) {
	if s.closed.Load() {
		return
	}
	s.mu.Lock()
	s.releases = append(s.releases, leaseRef{client, lease})
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Add queues u for the next flush (and counts it in the local mirror).
func (s *Redis) Add(client string, window time.Time, u Usage) {
	if u.IsZero() {
		return
	}
	s.local.Add(client, window, u)
	if s.closed.Load() {
		return
	}
	k := keyAt(client, window)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observeLocked(k.start)
	p := s.pending[k]
	if p == nil {
		p = &pending{}
		s.pending[k] = p
	}
	p.queued.Add(u)
}

// Spent is the fleet's total for the client's window as the last reply
// from Redis gave it, plus this replica's usage not yet counted there. It
// makes no round trip.
func (s *Redis) Spent(client string, window time.Time) Usage {
	k := keyAt(client, window)
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.fleet[k]
	u := snap.total.usage()
	if p := s.pending[k]; p != nil {
		u.Add(p.queued)
		if p.seq > snap.applied {
			u.Add(p.inflight.usage())
		}
	}
	return u
}

// Status reads the client's live sessions (dropping expired leases first)
// and the fleet's usage in the window: one round trip within Timeout. It
// fails, wrapping ErrUnavailable, when Redis does not answer.
func (s *Redis) Status(ctx context.Context, client string, window time.Time) (int, Usage, error) {
	if s.closed.Load() {
		return 0, Usage{}, fmt.Errorf("%w: the store is closed", ErrUnavailable)
	}
	k := keyAt(client, window)
	rctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	vals, err := replyInts(statusScript.Run(rctx, s.rdb,
		[]string{s.sessionsKey(client), s.usageKey(k)}, s.seqField), 7)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0, Usage{}, fmt.Errorf("state: status: %w", ctx.Err())
		}
		s.failed(opStatus, err)
		return 0, Usage{}, s.unavailable(err)
	}
	s.recovered()
	snap := snapshotOf(vals[1:])
	s.learn(k, snap)
	return int(vals[0]), snap.total.usage(), nil
}

// Close stops the goroutine, then sends the queued usage and removes this
// replica's leases from Redis (each within Timeout) and closes the client.
// Admit and Status fail after it; Add and Release only count locally.
func (s *Redis) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		<-s.done
		var mine []leaseRef
		for client, leases := range s.local.leaseList() {
			for _, l := range leases {
				s.local.release(client, l)
				mine = append(mine, leaseRef{client, l})
			}
		}
		s.mu.Lock()
		s.releases = append(s.releases, mine...)
		s.mu.Unlock()
		s.sendReleases()
		s.flush()
		s.closeErr = s.rdb.Close()
	})
	return s.closeErr
}

// kill stops the store as SIGKILL would: no flush, no release; its leases
// expire within LeaseTTL. For tests.
func (s *Redis) kill() {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		<-s.done
		s.closeErr = s.rdb.Close()
	})
}

// run flushes usage, sends releases and refreshes leases until Close.
func (s *Redis) run() {
	defer close(s.done)
	flush := time.NewTicker(max(s.opts.FlushInterval, time.Millisecond))
	defer flush.Stop()
	refresh := time.NewTicker(s.opts.LeaseTTL / 3)
	defer refresh.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
			s.sendReleases()
		case <-flush.C:
			s.sendReleases()
			s.flush()
		case <-refresh.C:
			s.refresh()
		}
	}
}

// maxQueuedReleases bounds the releases kept for a Redis that does not
// answer; beyond it the oldest are dropped (they expire within LeaseTTL).
const maxQueuedReleases = 10000

// sendReleases removes the released leases from Redis in one pipeline; on
// failure they are queued again (ZREM of a lease already gone is harmless).
func (s *Redis) sendReleases() {
	s.mu.Lock()
	rs := s.releases
	s.releases = nil
	s.mu.Unlock()
	if len(rs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	for _, r := range rs {
		pipe.ZRem(ctx, s.sessionsKey(r.client), r.lease)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.failed(opRelease, err)
		s.mu.Lock()
		s.releases = append(rs, s.releases...)
		if n := len(s.releases); n > maxQueuedReleases {
			s.releases = s.releases[n-maxQueuedReleases:]
		}
		s.mu.Unlock()
		return
	}
	s.recovered()
}

// refresh sets the expiry of every lease this replica holds to LeaseTTL
// from now, adding those Redis does not have (taken while it was down, or
// lost with its data): one pipeline, a script per client.
func (s *Redis) refresh() {
	leases := s.local.leaseList()
	if len(leases) == 0 {
		return
	}
	calls := make([]scriptCall, 0, len(leases))
	for client, ls := range leases {
		args := make([]any, 0, len(ls)+1)
		args = append(args, s.ttlMs)
		for _, l := range ls {
			args = append(args, l)
		}
		calls = append(calls, scriptCall{keys: []string{s.sessionsKey(client)}, args: args})
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	var firstErr error
	for _, cmd := range s.pipelineScript(ctx, refreshScript, calls) {
		firstErr = cmp.Or(firstErr, cmd.Err())
	}
	if firstErr != nil {
		s.failed(opRefresh, firstErr)
		return
	}
	s.recovered()
}

// flush sends the queued usage: one pipeline, a script per client and
// window. Each reply stands on its own: a batch Redis acknowledged is
// done and its totals learnt; a batch without a reply is sent again, with
// its number, at the next flush.
func (s *Redis) flush() {
	type batch struct {
		key redisKey
		seq uint64
		d   counts
	}
	s.mu.Lock()
	var batches []batch
	for k, p := range s.pending {
		if p.seq == 0 {
			c := countsOf(p.queued)
			if c.isZero() {
				if p.queued.IsZero() {
					delete(s.pending, k)
				}
				continue
			}
			s.seq++
			p.seq, p.inflight = s.seq, c
			p.queued = subtract(p.queued, c.usage())
		}
		batches = append(batches, batch{k, p.seq, p.inflight})
	}
	s.mu.Unlock()
	if len(batches) == 0 {
		return
	}
	calls := make([]scriptCall, len(batches))
	for i, b := range batches {
		calls[i] = scriptCall{keys: []string{s.usageKey(b.key)},
			args: []any{s.seqField, b.seq, b.d.tokens, b.d.audioMs, b.d.costNano, s.expireMs}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	cmds := s.pipelineScript(ctx, flushScript, calls)
	var firstErr error
	for i, b := range batches {
		vals, err := replyInts(cmds[i], 6)
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		s.mu.Lock()
		if p := s.pending[b.key]; p != nil && p.seq == b.seq {
			p.seq, p.inflight = 0, counts{}
			if p.queued.IsZero() {
				delete(s.pending, b.key)
			}
		}
		s.learnLocked(b.key, snapshotOf(vals))
		s.mu.Unlock()
	}
	if firstErr != nil {
		s.failed(opFlush, firstErr)
		return
	}
	s.recovered()
}

func subtract(u, v Usage) Usage {
	return Usage{Tokens: u.Tokens - v.Tokens, AudioSeconds: u.AudioSeconds - v.AudioSeconds, CostUSD: u.CostUSD - v.CostUSD}
}

type scriptCall struct {
	keys []string
	args []any
}

// pipelineScript runs sc once per call in one pipeline (EVALSHA). When
// Redis does not know the script (it restarted), it loads it and runs the
// calls that said so again, within the same ctx.
func (s *Redis) pipelineScript(ctx context.Context, sc *redis.Script, calls []scriptCall) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	run := func(idx []int) {
		pipe := s.rdb.Pipeline()
		for _, i := range idx {
			cmds[i] = sc.EvalSha(ctx, pipe, calls[i].keys, calls[i].args...)
		}
		_, _ = pipe.Exec(ctx)
	}
	all := make([]int, len(calls))
	for i := range all {
		all[i] = i
	}
	run(all)
	var again []int
	for i, c := range cmds {
		if err := c.Err(); errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) > 0 && sc.Load(ctx, s.rdb).Err() == nil {
		run(again)
	}
	return cmds
}

// learn records a snapshot of the fleet's usage unless an as recent one is
// known.
func (s *Redis) learn(k redisKey, snap snapshot) {
	s.mu.Lock()
	s.learnLocked(k, snap)
	s.mu.Unlock()
}

func (s *Redis) learnLocked(k redisKey, snap snapshot) {
	if snap.born == 0 {
		// Redis has no such key (it expired, or Redis lost its data): what
		// was learned of it before no longer stands.
		delete(s.fleet, k)
		return
	}
	if cur, ok := s.fleet[k]; ok && !snap.newer(cur) {
		return
	}
	if !s.windows.kept(k.start) {
		return
	}
	s.fleet[k] = snap
}

// observeLocked records a window start, dropping what is known of the
// windows before the previous one (but never usage not yet counted).
func (s *Redis) observeLocked(start int64) {
	_, before, prune := s.windows.observe(start)
	if !prune {
		return
	}
	for k := range s.fleet {
		if k.start < before {
			delete(s.fleet, k)
		}
	}
	for k, p := range s.pending {
		if k.start < before && p.seq == 0 && countsOf(p.queued).isZero() {
			delete(s.pending, k)
		}
	}
}

// snapshotOf reads the six usage fields of a reply.
func snapshotOf(v []int64) snapshot {
	return snapshot{total: counts{v[0], v[1], v[2]}, applied: uint64(max(v[3], 0)), born: v[4], version: v[5]}
}

// replyInts reads an array reply of n integers (integer or decimal string
// elements; nil is 0).
func replyInts(cmd *redis.Cmd, n int) ([]int64, error) {
	arr, err := cmd.Slice()
	if err != nil {
		return nil, err
	}
	if len(arr) != n {
		return nil, fmt.Errorf("redis replied %d values, want %d", len(arr), n)
	}
	out := make([]int64, n)
	for i, e := range arr {
		switch e := e.(type) {
		case nil:
		case int64:
			out[i] = e
		case string:
			if out[i], err = strconv.ParseInt(e, 10, 64); err != nil {
				return nil, fmt.Errorf("redis replied %q: %w", e, err)
			}
		default:
			return nil, fmt.Errorf("redis replied a %T", e)
		}
	}
	return out, nil
}

// unavailableError is what a failed round trip returns: it is
// ErrUnavailable and the cause, with credentials redacted from its text.
type unavailableError struct {
	msg   string
	cause error
}

func (e *unavailableError) Error() string   { return e.msg }
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.cause} }

func (s *Redis) unavailable(err error) error {
	return &unavailableError{msg: ErrUnavailable.Error() + " (" + s.where + "): " + s.redactor.Redact(err.Error()), cause: err}
}

// failed counts a failed round trip and warns, at most once a minute.
func (s *Redis) failed(op string, err error) {
	s.down.Store(true)
	if s.opts.OnError != nil {
		s.opts.OnError(op)
	}
	s.warnMu.Lock()
	now := time.Now()
	if !s.lastWarn.IsZero() && now.Sub(s.lastWarn) < warnEvery {
		s.suppressed++
		s.warnMu.Unlock()
		return
	}
	n := s.suppressed
	s.lastWarn, s.suppressed = now, 0
	s.warnMu.Unlock()
	policy := "fail_open"
	if s.opts.FailClosed {
		policy = "fail_closed"
	}
	s.log.Warn("state: redis store failing", "op", op, "redis", s.where, "policy", policy,
		"err", s.redactor.Redact(err.Error()), "failures_not_logged", n)
}

// recovered notes a round trip that worked; the first after failures says
// so in the log.
func (s *Redis) recovered() {
	if s.down.Load() && s.down.Swap(false) {
		s.log.Info("state: redis store answering again", "redis", s.where)
	}
}

var _ Store = (*Redis)(nil)
