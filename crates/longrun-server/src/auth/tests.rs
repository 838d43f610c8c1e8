use super::*;

fn caller(grants: &[&str]) -> Caller {
    Caller {
        request_id: "test".into(),
        protocol: "rest",
        deadline: None,
        principal: Some(Arc::new(Principal::new(
            "tester",
            grants.iter().map(|grant| Grant::parse(grant).unwrap()).collect(),
        ))),
    }
}

const ACTIONS: [Action; 10] = [
    Action::Get,
    Action::List,
    Action::Wait,
    Action::Cancel,
    Action::Delete,
    Action::Create,
    Action::Update,
    Action::Complete,
    Action::Claim,
    Action::Release,
];

#[test]
fn each_role_allows_exactly_its_actions() {
    use Action::*;
    let table: [(Role, &[Action]); 5] = [
        (Role::Viewer, &[Get, List, Wait]),
        (Role::Editor, &[Get, List, Wait, Cancel, Delete]),
        (Role::Producer, &[Get, List, Wait, Create, Update, Complete]),
        (Role::Worker, &[Get, List, Wait, Claim, Update, Complete, Release]),
        (Role::Admin, &ACTIONS),
    ];
    for (role, allowed) in table {
        for action in ACTIONS {
            assert_eq!(role.allows(action), allowed.contains(&action), "{role:?} {action:?}");
        }
    }
}

#[test]
fn grants_cover_whole_segments() {
    let c = caller(&["projects/a=viewer"]);
    assert!(authorize(&c, Action::Get, "projects/a/operations/x").is_ok());
    assert!(authorize(&c, Action::Get, "projects/a/locations/l/operations/x").is_ok());
    let err = authorize(&c, Action::Get, "projects/ab/operations/x").unwrap_err();
    assert_eq!(err.code, Code::PermissionDenied);
    assert!(err.message.contains("\"tester\" may not get"), "{}", err.message);
    assert!(
        authorize(&c, Action::Cancel, "projects/a/operations/x").is_err(),
        "a viewer"
    );
    assert!(authorize(&caller(&["*=admin"]), Action::Delete, "operations/x").is_ok());
    let open = Caller {
        request_id: "t".into(),
        protocol: "rest",
        principal: None,
        deadline: None,
    };
    assert!(authorize(&open, Action::Delete, "anything").is_ok(), "an open server");
}

#[test]
fn list_scope_is_all_within_or_denied() {
    let parent = |text: &str| Parent::parse_pattern(text).unwrap();
    let c = caller(&[
        "projects/a=viewer",
        "projects/b/operations/x=viewer",
        "projects/c=worker",
    ]);
    assert_eq!(
        scope(&c, Action::List, &parent("projects/a"), false).unwrap(),
        Scope::All
    );
    assert_eq!(
        scope(&c, Action::List, &parent("projects/a/locations/l"), false).unwrap(),
        Scope::All
    );
    assert_eq!(
        scope(&c, Action::List, &parent("projects/b"), false).unwrap(),
        Scope::Within(vec!["projects/b/operations/x".into()]),
        "an operation granted alone"
    );
    assert_eq!(
        scope(&c, Action::List, &parent("projects/-"), false).unwrap(),
        Scope::Within(vec![
            "projects/a".into(),
            "projects/b/operations/x".into(),
            "projects/c".into()
        ]),
        "a wildcard shows what each grant covers"
    );
    assert_eq!(
        scope(&c, Action::List, &parent("projects/-/locations/l"), false).unwrap(),
        Scope::Within(vec!["projects/a".into(), "projects/c".into()])
    );
    assert_eq!(
        scope(&c, Action::List, &parent("projects/z"), false).unwrap_err().code,
        Code::PermissionDenied
    );
    assert_eq!(
        scope(&c, Action::List, &parent(""), false).unwrap_err().code,
        Code::PermissionDenied,
        "top-level operations are under no grant"
    );
}

#[test]
fn claim_scope_reaches_below_the_parent() {
    let parent = |text: &str| Parent::parse(text).unwrap();
    let c = caller(&["projects/a/locations/l=worker", "projects/b=viewer"]);
    assert_eq!(
        scope(&c, Action::Claim, &parent("projects/a/locations/l"), true).unwrap(),
        Scope::All
    );
    assert_eq!(
        scope(&c, Action::Claim, &parent("projects/a"), true).unwrap(),
        Scope::Within(vec!["projects/a/locations/l".into()])
    );
    assert_eq!(
        scope(&c, Action::Claim, &parent(""), true).unwrap(),
        Scope::Within(vec!["projects/a/locations/l".into()]),
        "a worker claiming everywhere gets only its own"
    );
    assert_eq!(
        scope(&c, Action::Claim, &parent("projects/b"), true).unwrap_err().code,
        Code::PermissionDenied,
        "viewers do not claim"
    );
}

#[test]
fn tokens_parse_and_authenticate_by_hash() {
    let secret = "s3cret-value";
    let hex: String = Sha256::digest(secret.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let text = format!(
        "[[token]]\nname = \"ci\"\nsha256 = \"{hex}\"\ngrants = [\"projects/demo=admin\"]\n\n\
         [[token]]\nname = \"dev\"\nsecret = \"dev-only\"\ngrants = [\"*=viewer\"]\n"
    );
    let access = Access::with_tokens(Tokens::parse(&text).unwrap());
    let who = |header: &str| access.authenticate(Some(header.as_bytes()));
    assert_eq!(who(&format!("Bearer {secret}")).unwrap().unwrap().name, "ci");
    assert_eq!(who("bearer dev-only").unwrap().unwrap().name, "dev");
    for bad in ["Bearer nope", "Basic abc", "Bearer ", "token"] {
        assert_eq!(who(bad).unwrap_err().code, Code::Unauthenticated, "{bad:?}");
    }
    assert_eq!(access.authenticate(None).unwrap_err().code, Code::Unauthenticated);
    assert!(Access::open().authenticate(None).unwrap().is_none());
}

#[test]
fn bad_token_files_name_the_token() {
    for (text, needle) in [
        ("[[token]]\nname = \"a\"\n", "needs sha256"),
        ("[[token]]\nname = \"a\"\nsha256 = \"abc\"\n", "64 hex digits"),
        (
            "[[token]]\nname = \"a\"\nsecret = \"x\"\ngrants = [\"projects/p\"]\n",
            "prefix=role",
        ),
        (
            "[[token]]\nname = \"a\"\nsecret = \"x\"\ngrants = [\"projects/p=owner\"]\n",
            "unknown role",
        ),
        (
            "[[token]]\nname = \"a\"\nsecret = \"x\"\ngrants = [\"projects//p=viewer\"]\n",
            "resource path",
        ),
        (
            "[[token]]\nname = \"a\"\nsecret = \"x\"\n[[token]]\nname = \"b\"\nsecret = \"x\"\n",
            "same secret",
        ),
        (
            "[[token]]\nname = \"a\"\nsecret = \"x\"\nrole = \"admin\"\n",
            "unknown field",
        ),
    ] {
        let err = Tokens::parse(text).unwrap_err();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}
