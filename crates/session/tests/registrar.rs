//! Registrar over real SIP on loopback: digest challenge and verification, bindings,
//! expiry, several contacts, TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use call_engine_events::{AgentId, SessionEvent};
use call_engine_session::Transport;
use std::time::Duration;
use support::*;

fn register_req(
    ua: &Ua,
    user: &str,
    cseq: u32,
    call_id: &str,
    contact: &str,
    expires: &str,
) -> Req {
    Req::new("REGISTER", &format!("sip:{DOMAIN}"))
        .h("Via", ua.via(&branch()))
        .h("Max-Forwards", 70)
        .h("From", format!("<sip:{user}@{DOMAIN}>;tag=reg{cseq}"))
        .h("To", format!("<sip:{user}@{DOMAIN}>"))
        .h("Call-ID", call_id)
        .h("CSeq", format!("{cseq} REGISTER"))
        .h("Contact", contact)
        .h("Expires", expires)
}

#[tokio::test]
async fn register_is_challenged_then_accepted() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let contact = ua.contact("alice");

    // First attempt: 401 with a fresh MD5 digest challenge for our realm.
    let call_id = rand_token();
    ua.send(&register_req(&ua, "alice", 1, &call_id, &format!("<{contact}>"), "120").build())
        .await;
    let challenge = ua.recv().await;
    assert_eq!(challenge.status(), Some(401));
    let www = challenge.h("WWW-Authenticate");
    assert!(www.starts_with("Digest "), "{www}");
    assert!(www.contains(&format!("realm=\"{DOMAIN}\"")), "{www}");
    assert!(www.contains("qop=\"auth\""), "{www}");
    assert!(www.contains("algorithm=MD5"), "{www}");
    assert!(challenge.to_tag().is_some());
    // Response routing: rport filled in, received added.
    assert!(challenge
        .h("Via")
        .contains(&format!("rport={}", ua.local.port())));
    assert!(!env.sip().bindings().is_registered(&AgentId::new("alice")));

    // Second attempt with the right password: 200 listing the binding.
    let auth = authorization(
        www,
        "alice",
        "secret",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        true,
    );
    ua.send(
        &register_req(&ua, "alice", 2, &call_id, &format!("<{contact}>"), "120")
            .h("Authorization", auth)
            .build(),
    )
    .await;
    let ok = ua.recv().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.text);
    assert_eq!(ok.uri_of("Contact"), contact);
    assert_eq!(ok.param("Contact", "expires").as_deref(), Some("120"));

    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::Registered {
            agent: AgentId::new("alice"),
            contact: contact.clone().into(),
            expires_secs: 120
        }
    );
    assert_eq!(got.correlation, AgentId::new("alice").correlation().0);
    assert_eq!(got.causation, None);

    let b = env.sip().bindings().of(&AgentId::new("alice"));
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].contact, contact);
    assert_eq!(b[0].expires_secs, 120);
    assert_eq!(b[0].transport, Transport::Udp);
    assert_eq!(b[0].source, ua.local);
    assert!(b[0].remaining() > Duration::from_secs(100));

    // A refresh emits Registered again, with the new expiry.
    let r = ua.register("alice", "secret", &contact, 300).await;
    assert_eq!(r.status(), Some(200));
    match env.event().await.event {
        SessionEvent::Registered { expires_secs, .. } => assert_eq!(expires_secs, 300),
        other => panic!("{other:?}"),
    }
    assert_eq!(env.sip().bindings().of(&AgentId::new("alice")).len(), 1);
    env.shutdown().await;
}

#[tokio::test]
async fn rfc2069_digest_without_qop_is_accepted() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let contact = ua.contact("bob");
    let call_id = rand_token();
    ua.send(&register_req(&ua, "bob", 1, &call_id, &format!("<{contact}>"), "60").build())
        .await;
    let ch = ua.recv().await;
    let auth = authorization(
        ch.h("WWW-Authenticate"),
        "bob",
        "hunter2",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        false,
    );
    assert!(!auth.contains("qop"));
    ua.send(
        &register_req(&ua, "bob", 2, &call_id, &format!("<{contact}>"), "60")
            .h("Authorization", auth)
            .build(),
    )
    .await;
    assert_eq!(ua.recv().await.status(), Some(200));
    assert!(matches!(
        env.event().await.event,
        SessionEvent::Registered { .. }
    ));
    env.shutdown().await;
}

/// Sends a REGISTER that must be accepted: 200, and a `Registered` event.
async fn registered(env: &mut Env, ua: &mut Ua, register: &str) {
    ua.send(register).await;
    let r = ua.recv().await;
    assert_eq!(r.status(), Some(200), "{}", r.text);
    assert!(matches!(
        env.event().await.event,
        SessionEvent::Registered { .. }
    ));
}

#[tokio::test]
async fn replayed_credentials_are_refused_as_stale() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let uri = format!("sip:{DOMAIN}");
    let call_id = rand_token();
    // A REGISTER of `agent` for `contact` with `auth`, in a transaction of its own.
    let register = |ua: &Ua, agent: &str, cseq: u32, contact: &str, auth: Option<&str>| {
        let r = register_req(ua, agent, cseq, &call_id, &format!("<{contact}>"), "120");
        match auth {
            Some(a) => r.h("Authorization", a).build(),
            None => r.build(),
        }
    };
    let attacker = "sip:attacker@192.0.2.66:5060";
    // Each agent's challenge; alice answers with qop (nonce counts), bob without.
    for (agent, password, qop) in [("alice", "secret", true), ("bob", "hunter2", false)] {
        let contact = ua.contact(agent);
        ua.send(&register(&ua, agent, 1, &contact, None)).await;
        let ch = ua.recv().await;
        let www = ch.h("WWW-Authenticate").to_string();
        let auth = authorization_nc(&www, agent, password, "REGISTER", &uri, qop.then_some(1));
        let text = register(&ua, agent, 2, &contact, Some(&auth));
        registered(&mut env, &mut ua, &text).await;
        // The same credentials again, as someone who saw them would send them: refused
        // as stale (the phone itself would take the new nonce).
        ua.send(&register(&ua, agent, 3, attacker, Some(&auth)))
            .await;
        let r = ua.recv().await;
        assert_eq!(r.status(), Some(401), "{agent}: {}", r.text);
        assert!(r.h("WWW-Authenticate").contains("stale=true"), "{}", r.text);
        if qop {
            // A higher count on the same nonce is the phone's own next request.
            let next = authorization_nc(&www, agent, password, "REGISTER", &uri, Some(2));
            let text = register(&ua, agent, 4, &contact, Some(&next));
            registered(&mut env, &mut ua, &text).await;
            // ... and that count is spent too.
            ua.send(&register(&ua, agent, 5, attacker, Some(&next)))
                .await;
            assert_eq!(ua.recv().await.status(), Some(401), "{agent}");
        }
        // Only the phone's own contact was ever bound.
        let b = env.sip().bindings().of(&AgentId::new(agent));
        assert_eq!(b.len(), 1, "{agent}");
        assert_eq!(b[0].contact, contact, "{agent}");
    }
    assert!(env.event_within(Duration::from_millis(50)).await.is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn wrong_password_is_forbidden_and_reported() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let contact = ua.contact("alice");
    let r = ua.register("alice", "not-the-password", &contact, 60).await;
    assert_eq!(r.status(), Some(403));
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::AuthenticationFailed {
            username: "alice".into(),
            source: ua.local.to_string().into()
        }
    );
    assert!(!env.sip().bindings().is_registered(&AgentId::new("alice")));
    assert!(env.sip().bindings().all().is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn a_password_guesser_is_reported_once_a_second_not_per_guess() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let contact = ua.contact("alice");
    for guess in ["a", "b", "c", "d", "e"] {
        let r = ua.register("alice", guess, &contact, 60).await;
        assert_eq!(r.status(), Some(403), "every guess is refused");
    }
    assert!(matches!(
        env.event().await.event,
        SessionEvent::AuthenticationFailed { .. }
    ));
    assert!(env.event_within(Duration::from_millis(100)).await.is_none());
    assert_eq!(env.sip().stats().auth_failures_unreported, 4);
    // A second later the same source is reported again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        ua.register("alice", "f", &contact, 60).await.status(),
        Some(403)
    );
    assert!(matches!(
        env.event().await.event,
        SessionEvent::AuthenticationFailed { .. }
    ));
    assert!(env.sip().bindings().all().is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn unknown_user_is_forbidden() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let contact = ua.contact("mallory");
    let r = ua.register("mallory", "guess", &contact, 60).await;
    assert_eq!(r.status(), Some(403));
    match env.event().await.event {
        SessionEvent::AuthenticationFailed { username, .. } => assert_eq!(username, "mallory"),
        other => panic!("{other:?}"),
    }
    assert!(env.sip().bindings().all().is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn credentials_of_another_agent_are_forbidden() {
    // bob's valid credentials cannot register alice's address.
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let call_id = rand_token();
    let contact = format!("<{}>", ua.contact("alice"));
    ua.send(&register_req(&ua, "alice", 1, &call_id, &contact, "60").build())
        .await;
    let ch = ua.recv().await;
    let auth = authorization(
        ch.h("WWW-Authenticate"),
        "bob",
        "hunter2",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        true,
    );
    ua.send(
        &register_req(&ua, "alice", 2, &call_id, &contact, "60")
            .h("Authorization", auth)
            .build(),
    )
    .await;
    assert_eq!(ua.recv().await.status(), Some(403));
    assert!(matches!(
        env.event().await.event,
        SessionEvent::AuthenticationFailed { .. }
    ));
    assert!(env.sip().bindings().all().is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn expired_nonce_gets_stale_challenge() {
    let mut env = Env::start_with(|c| c.nonce_lifetime = Duration::from_millis(50)).await;
    let mut ua = Ua::udp(env.udp).await;
    let call_id = rand_token();
    let contact = format!("<{}>", ua.contact("alice"));
    ua.send(&register_req(&ua, "alice", 1, &call_id, &contact, "60").build())
        .await;
    let ch = ua.recv().await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let auth = authorization(
        ch.h("WWW-Authenticate"),
        "alice",
        "secret",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        true,
    );
    ua.send(
        &register_req(&ua, "alice", 2, &call_id, &contact, "60")
            .h("Authorization", auth)
            .build(),
    )
    .await;
    let stale = ua.recv().await;
    assert_eq!(stale.status(), Some(401));
    assert!(stale.h("WWW-Authenticate").contains("stale=true"));
    assert!(
        env.event_within(Duration::from_millis(100)).await.is_none(),
        "no failure event for a stale nonce"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn digest_uri_must_match_the_request_uri() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let call_id = rand_token();
    let contact = format!("<{}>", ua.contact("alice"));
    ua.send(&register_req(&ua, "alice", 1, &call_id, &contact, "60").build())
        .await;
    let ch = ua.recv().await;
    let auth = authorization(
        ch.h("WWW-Authenticate"),
        "alice",
        "secret",
        "REGISTER",
        "sip:elsewhere.test",
        true,
    );
    ua.send(
        &register_req(&ua, "alice", 2, &call_id, &contact, "60")
            .h("Authorization", auth)
            .build(),
    )
    .await;
    assert_eq!(ua.recv().await.status(), Some(400));
    assert!(env.sip().bindings().all().is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn expires_zero_unregisters() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let contact = ua.contact("alice");
    assert_eq!(
        ua.register("alice", "secret", &contact, 60).await.status(),
        Some(200)
    );
    assert!(matches!(
        env.event().await.event,
        SessionEvent::Registered { .. }
    ));

    let r = ua.register("alice", "secret", &contact, 0).await;
    assert_eq!(r.status(), Some(200));
    assert!(r.header("Contact").is_none(), "no binding left: {}", r.text);
    assert_eq!(
        env.event().await.event,
        SessionEvent::Unregistered {
            agent: AgentId::new("alice"),
            contact: contact.into(),
            expired: false
        }
    );
    assert!(!env.sip().bindings().is_registered(&AgentId::new("alice")));
    env.shutdown().await;
}

#[tokio::test]
async fn star_contact_removes_every_binding() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let c1 = format!("sip:alice@{}", ua.local);
    let c2 = "sip:alice@127.0.0.1:5999".to_string();
    assert_eq!(
        ua.register("alice", "secret", &c1, 60).await.status(),
        Some(200)
    );
    assert_eq!(
        ua.register("alice", "secret", &c2, 60).await.status(),
        Some(200)
    );
    env.event().await;
    env.event().await;
    assert_eq!(env.sip().bindings().of(&AgentId::new("alice")).len(), 2);
    // Contact: * with Expires: 0 (authenticated).
    let call_id = rand_token();
    ua.send(&register_req(&ua, "alice", 1, &call_id, "*", "0").build())
        .await;
    let ch = ua.recv().await;
    let auth = authorization(
        ch.h("WWW-Authenticate"),
        "alice",
        "secret",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        true,
    );
    ua.send(
        &register_req(&ua, "alice", 2, &call_id, "*", "0")
            .h("Authorization", auth)
            .build(),
    )
    .await;
    assert_eq!(ua.recv().await.status(), Some(200));
    let mut removed = vec![];
    for _ in 0..2 {
        match env.event().await.event {
            SessionEvent::Unregistered {
                contact, expired, ..
            } => {
                assert!(!expired);
                removed.push(contact.to_string());
            }
            other => panic!("{other:?}"),
        }
    }
    removed.sort();
    let mut want = vec![c1, c2];
    want.sort();
    assert_eq!(removed, want);
    assert!(env.sip().bindings().all().is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn binding_expires_on_its_timer() {
    let mut env = Env::start_with(|c| {
        c.min_expires_secs = 1;
        c.max_expires_secs = 1; // whatever the phone asks, it gets 1 s
    })
    .await;
    let mut ua = Ua::udp(env.udp).await;
    let contact = ua.contact("alice");
    let ok = ua.register("alice", "secret", &contact, 3600).await;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        ok.param("Contact", "expires").as_deref(),
        Some("1"),
        "clamped to max"
    );
    match env.event().await.event {
        SessionEvent::Registered { expires_secs, .. } => assert_eq!(expires_secs, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        env.event().await.event,
        SessionEvent::Unregistered {
            agent: AgentId::new("alice"),
            contact: contact.into(),
            expired: true
        }
    );
    assert!(!env.sip().bindings().is_registered(&AgentId::new("alice")));
    env.shutdown().await;
}

#[tokio::test]
async fn too_brief_expiry_gets_423() {
    let mut env = Env::start_with(|c| c.min_expires_secs = 60).await;
    let mut ua = Ua::udp(env.udp).await;
    let contact = ua.contact("alice");
    let r = ua.register("alice", "secret", &contact, 30).await;
    assert_eq!(r.status(), Some(423));
    assert_eq!(r.h("Min-Expires"), "60");
    assert!(env.sip().bindings().all().is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn two_contacts_for_one_agent() {
    let mut env = Env::start().await;
    let mut desk = Ua::udp(env.udp).await;
    let mut soft = Ua::udp(env.udp).await;
    let c1 = desk.contact("alice");
    let c2 = soft.contact("alice");
    assert_eq!(
        desk.register("alice", "secret", &c1, 60).await.status(),
        Some(200)
    );
    env.event().await;
    let ok = soft.register("alice", "secret", &c2, 90).await;
    assert_eq!(ok.status(), Some(200));
    // The 200 lists both bindings.
    let listed: Vec<&str> = ok.headers("Contact");
    assert_eq!(listed.len(), 2, "{}", ok.text);
    assert!(listed.iter().any(|c| c.contains(&c1)));
    assert!(listed
        .iter()
        .any(|c| c.contains(&c2) && c.ends_with(";expires=90")));
    env.event().await;
    let b = env.sip().bindings().of(&AgentId::new("alice"));
    assert_eq!(b.len(), 2);
    assert_eq!(b.iter().filter(|b| b.source == soft.local).count(), 1);

    // Several contacts in one REGISTER, with per-contact expires overriding the header.
    let call_id = rand_token();
    let contacts = "<sip:alice@127.0.0.1:6001>;expires=30, <sip:alice@127.0.0.1:6002>";
    desk.send(&register_req(&desk, "alice", 1, &call_id, contacts, "45").build())
        .await;
    let ch = desk.recv().await;
    let auth = authorization(
        ch.h("WWW-Authenticate"),
        "alice",
        "secret",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        true,
    );
    desk.send(
        &register_req(&desk, "alice", 2, &call_id, contacts, "45")
            .h("Authorization", auth)
            .build(),
    )
    .await;
    assert_eq!(desk.recv().await.status(), Some(200));
    let mut got = vec![];
    for _ in 0..2 {
        match env.event().await.event {
            SessionEvent::Registered {
                contact,
                expires_secs,
                ..
            } => got.push((contact.to_string(), expires_secs)),
            other => panic!("{other:?}"),
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("sip:alice@127.0.0.1:6001".to_string(), 30),
            ("sip:alice@127.0.0.1:6002".to_string(), 45)
        ]
    );
    assert_eq!(env.sip().bindings().of(&AgentId::new("alice")).len(), 4);
    env.shutdown().await;
}

#[tokio::test]
async fn register_over_tcp() {
    let mut env = Env::start().await;
    let mut ua = Ua::tcp(env.tcp).await;
    let contact = ua.contact("alice");
    assert!(contact.ends_with(";transport=tcp"));
    let ok = ua.register("alice", "secret", &contact, 60).await;
    assert_eq!(ok.status(), Some(200), "{}", ok.text);
    assert!(ok.h("Via").starts_with("SIP/2.0/TCP"));
    match env.event().await.event {
        SessionEvent::Registered { contact: c, .. } => assert_eq!(c, contact),
        other => panic!("{other:?}"),
    }
    let b = env.sip().bindings().of(&AgentId::new("alice"));
    assert_eq!(b[0].transport, Transport::Tcp);
    assert_eq!(b[0].source_transport, Transport::Tcp);
    assert_eq!(b[0].source, ua.local);
    env.shutdown().await;
}

#[tokio::test]
async fn retransmitted_register_is_answered_from_the_transaction() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let req = register_req(
        &ua,
        "alice",
        1,
        &rand_token(),
        &format!("<{}>", ua.contact("alice")),
        "60",
    )
    .build();
    ua.send(&req).await;
    let first = ua.recv().await;
    ua.send(&req).await; // same branch: a retransmission
    let second = ua.recv().await;
    assert_eq!(first.status(), Some(401));
    assert_eq!(
        first.text, second.text,
        "the cached response, byte for byte (same nonce)"
    );
    env.shutdown().await;
}
