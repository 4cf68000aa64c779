//! Who may use the web page: passwords (Argon2id), sessions, CSRF tokens, login throttling
//! and the one-time setup link of a fresh box.
//!
//! Sessions live in memory only: a restart logs everybody out. A session ID is 256 random
//! bits; the map is keyed by its SHA-256, so the IDs themselves are kept nowhere. A session
//! ends after `session_idle_minutes` without a request, `session_max_hours` after login, at
//! logout, and when its local account is disabled or its password changed.
//!
//! Throttling is in memory as well: failures per account and per address within
//! `lockout_minutes`; over the limit, that account (or address) may not log in until the
//! window has passed. Lockouts are audited by the caller.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::{Grants, WebConfig};

// The password rules and hashing live below the control API and the web page, which both
// use them (`fiona user`, the setup link, the Users page).
pub use crate::password::{
    check_new_password, hash_password, verify_password, MAX_PASSWORD_LEN, MIN_PASSWORD_LEN,
};

/// A hash to verify against when the account does not exist, so that an unknown name
/// takes as long as a wrong password.
pub fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

/// 256 random bits as 64 hex digits.
pub fn random_token() -> Result<String, String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("no random bytes: {e}"))?;
    Ok(hex(&b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compare two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (digest(a), digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Where an identity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `fiona user add` (the index).
    Local,
    /// `[[web.accounts]]` (configuration).
    Config,
    /// `[web.ldap]`.
    Ldap,
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub source: Source,
    pub grants: Grants,
}

impl Identity {
    /// The audit trail's actor for a change made on the page.
    pub fn actor(&self) -> String {
        format!("web:{}", self.name)
    }
}

struct Session {
    identity: Identity,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// What a request learns from its session cookie.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub identity: Identity,
    pub csrf: String,
}

/// The sessions of the page, in memory.
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    max: Duration,
}

impl Sessions {
    pub fn new(cfg: &WebConfig) -> Sessions {
        Sessions {
            map: Mutex::default(),
            idle: Duration::from_secs_f64(cfg.session_idle_minutes * 60.0),
            max: Duration::from_secs_f64(cfg.session_max_hours * 3600.0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start a session; returns the cookie value (the session ID).
    pub fn create(&self, identity: Identity) -> Result<String, String> {
        let id = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut m = self.lock();
        m.retain(|_, s| self.alive(s, now));
        m.insert(
            digest(&id),
            Session {
                identity,
                csrf,
                created: now,
                last_seen: now,
            },
        );
        Ok(id)
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) < self.idle && now.duration_since(s.created) < self.max
    }

    /// The session of a cookie, if it is alive (and then it was used now).
    pub fn get(&self, id: &str) -> Option<SessionView> {
        let now = Instant::now();
        let mut m = self.lock();
        let key = digest(id);
        let s = m.get_mut(&key)?;
        if !self.alive(s, now) {
            m.remove(&key);
            return None;
        }
        s.last_seen = now;
        Some(SessionView {
            identity: s.identity.clone(),
            csrf: s.csrf.clone(),
        })
    }

    /// Replace a session's grants (a local account's roles changed).
    pub fn refresh(&self, id: &str, grants: Grants) {
        if let Some(s) = self.lock().get_mut(&digest(id)) {
            s.identity.grants = grants;
        }
    }

    /// End one session (logout).
    pub fn remove(&self, id: &str) {
        self.lock().remove(&digest(id));
    }

    /// End every session of a user (disabled, password changed).
    pub fn remove_user(&self, name: &str) {
        self.lock().retain(|_, s| s.identity.name != name);
    }

    pub fn count(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|s| self.alive(s, now)).count()
    }
}

/// Failed logins per account and per address.
pub struct Throttle {
    window: Duration,
    per_account: u32,
    per_address: u32,
    accounts: Mutex<HashMap<String, Vec<Instant>>>,
    addresses: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

/// Why a login may not even be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    Account,
    Address,
}

impl Throttle {
    pub fn new(cfg: &WebConfig) -> Throttle {
        Throttle {
            window: Duration::from_secs_f64(cfg.lockout_minutes * 60.0),
            per_account: cfg.max_failures_per_account,
            per_address: cfg.max_failures_per_address,
            accounts: Mutex::default(),
            addresses: Mutex::default(),
        }
    }

    fn recent<K: std::hash::Hash + Eq>(
        &self,
        m: &Mutex<HashMap<K, Vec<Instant>>>,
        k: &K,
        now: Instant,
    ) -> usize {
        let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(k) {
            Some(v) => {
                v.retain(|t| now.duration_since(*t) < self.window);
                v.len()
            }
            None => 0,
        }
    }

    /// May this account be tried from this address now?
    pub fn check(&self, account: &str, addr: IpAddr) -> Result<(), Blocked> {
        let now = Instant::now();
        if self.recent(&self.addresses, &addr, now) >= self.per_address as usize {
            return Err(Blocked::Address);
        }
        if self.recent(&self.accounts, &account.to_string(), now) >= self.per_account as usize {
            return Err(Blocked::Account);
        }
        Ok(())
    }

    /// Record a failure; returns what it locked now (the failure that reached a limit).
    pub fn fail(&self, account: &str, addr: IpAddr) -> Vec<Blocked> {
        let now = Instant::now();
        let mut locked = Vec::new();
        {
            let mut m = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
            // Bound the map: names that do not exist are tried too.
            if m.len() > 100_000 {
                m.retain(|_, v| v.iter().any(|t| now.duration_since(*t) < self.window));
            }
            let v = m.entry(account.to_string()).or_default();
            v.retain(|t| now.duration_since(*t) < self.window);
            v.push(now);
            if v.len() == self.per_account as usize {
                locked.push(Blocked::Account);
            }
        }
        let mut m = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 100_000 {
            m.retain(|_, v| v.iter().any(|t| now.duration_since(*t) < self.window));
        }
        let v = m.entry(addr).or_default();
        v.retain(|t| now.duration_since(*t) < self.window);
        v.push(now);
        if v.len() == self.per_address as usize {
            locked.push(Blocked::Address);
        }
        locked
    }

    /// A successful login clears the account's failures (not the address's).
    pub fn succeed(&self, account: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(account);
    }
}

/// The one-time setup link of a box without any account.
#[derive(Default)]
pub struct Setup {
    token: Mutex<Option<String>>,
}

impl Setup {
    /// Arm the link with a new token; returns it.
    pub fn arm(&self) -> Result<String, String> {
        let t = random_token()?;
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.clone());
        Ok(t)
    }
    pub fn pending(&self) -> bool {
        self.token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
    /// Is `t` the armed token?
    pub fn matches(&self, t: &str) -> bool {
        self.token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .is_some_and(|x| same_secret(x, t))
    }
    /// Use the token up (once the first admin exists).
    pub fn disarm(&self) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_or_too_old_or_removed() {
        let cfg = WebConfig {
            session_idle_minutes: 0.01,
            ..WebConfig::default()
        };
        let s = Sessions::new(&cfg);
        let who = Identity {
            name: "alice".into(),
            source: Source::Local,
            grants: Grants::default(),
        };
        let id = s.create(who.clone()).unwrap();
        assert_eq!(id.len(), 64);
        let v = s.get(&id).unwrap();
        assert_eq!(v.csrf.len(), 64);
        assert!(s.get("00").is_none());
        std::thread::sleep(Duration::from_millis(700));
        assert!(s.get(&id).is_none(), "idle expiry");
        let id2 = s.create(who).unwrap();
        s.remove_user("alice");
        assert!(s.get(&id2).is_none());
    }

    #[test]
    fn throttle_locks_an_account_and_an_address() {
        let cfg = WebConfig {
            max_failures_per_account: 3,
            max_failures_per_address: 4,
            ..WebConfig::default()
        };
        let t = Throttle::new(&cfg);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(t.fail("alice", a).is_empty());
        assert!(t.fail("alice", a).is_empty());
        assert_eq!(t.fail("alice", b), vec![Blocked::Account]);
        assert_eq!(t.check("alice", b), Err(Blocked::Account));
        assert_eq!(t.check("bob", b), Ok(()));
        t.fail("x", a);
        assert_eq!(t.fail("y", a), vec![Blocked::Address]);
        assert_eq!(t.check("bob", a), Err(Blocked::Address));
    }
}
