//! The console in a real browser: headless Chromium, driven over WebDriver,
//! against the whole system (the four services, Postgres, and the embedded
//! broker or Apache Kafka per `TEST_KAFKA`) with the console in-process.
//!
//! It proves what a user sees, not what the HTML says: the overview and its
//! navigation; an order placed from the form whose status turns CONFIRMED
//! without a reload (the live updates work, script included); its saga
//! picture (events in order, cause-to-effect arrows); its message found by
//! key on `order-created`; the inventory group's lag reaching 0; a poison
//! message dead-lettered, shown with its error, and replayed with the button;
//! and the orders page at phone width without sideways scrolling.
//!
//! With `AUTH_MODE=jwt` (a second stack and browser): an anonymous visitor is
//! sent to the sign-in page, a customer's token is refused, an administrator
//! signs in by pasting a token, which script on the page cannot read, and
//! places an order that turns CONFIRMED live, the console relaying the
//! administrator's token to the services.
//!
//! One stack and one browser per mode, to keep CI time down.
//! Screenshots of each step go to `$CARGO_TARGET_TMPDIR/console-screenshots`.
//! To regenerate the README's picture (`docs/console.png`):
//! `CONSOLE_README_SCREENSHOT=1 cargo test -p console --test browser`.

mod webdriver;

use std::path::{Path, PathBuf};

use local_infra::identity::{LOCAL_AUDIENCE, LOCAL_ISSUER};
use serde_json::{json, Value};
use service_kit::ServiceConfig;
use system_tests::wait_for;
use system_tests::{StackAuth, StackOptions, TestIssuer, TestStack};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use webdriver::Browser;

/// The product the test orders; unique to this test's stack anyway.
const SKU: &str = "browser-widget";
const PRICE_CENTS: i64 = 1_999;
const STOCK: i64 = 10;
const CUSTOMER: &str = "browser-alice";
/// The poison message's key on `order-created`.
const POISON_KEY: &str = "poison-1";
/// A phone's viewport (an iPhone 12-14's CSS pixels).
const PHONE: (u32, u32) = (390, 844);

/// The console running in-process against the stack.
struct Console {
    base_url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Console {
    async fn start(stack: &TestStack) -> Console {
        Self::start_with(stack, None).await
    }

    /// The console checking tokens against `auth`'s JWKS, as the stack does.
    async fn start_with(stack: &TestStack, auth: Option<&StackAuth>) -> Console {
        let mut config = console::Config::defaults();
        if let Some(auth) = auth {
            config.common.auth_mode = service_kit::config::AuthMode::Jwt;
            config.common.auth_jwks_file = auth.jwks_file.display().to_string();
            config.common.auth_issuer = LOCAL_ISSUER.to_owned();
            config.common.auth_audience = LOCAL_AUDIENCE.to_owned();
        }
        config.common.kafka.bootstrap_servers = stack.kafka_bootstrap.clone();
        config.common.port = 0;
        config.common.host = "127.0.0.1".to_owned();
        config.common.set_topics(&stack.topics);
        config.console_order_service_url = stack.order_url("");
        config.console_inventory_service_url = stack.inventory_url("");
        config.console_payment_service_url = stack.payment_url("");
        config.console_notification_service_url = stack.notification_url("");
        let mut groups: Vec<&str> = stack.groups.values().map(String::as_str).collect();
        groups.sort_unstable();
        config.console_groups = groups.join(",");
        let app = console::Application::build(config)
            .await
            .expect("building the console");
        let base_url = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Console {
            base_url,
            stop,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the console task panicked")
            .expect("the console stopped cleanly");
    }
}

/// Where each step's screenshot goes.
struct Screenshots {
    dir: PathBuf,
}

impl Screenshots {
    fn new() -> Screenshots {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&dir).expect("creating the screenshot directory");
        Screenshots { dir }
    }

    /// Saves what the browser shows as `{name}.png`, and returns the PNG.
    async fn take(&self, browser: &Browser, name: &str) -> Vec<u8> {
        let png = browser.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        std::fs::write(self.dir.join(format!("{name}.png")), &png).expect("saving a screenshot");
        png
    }
}

/// Runs `script` with `args` in the page until it returns something other
/// than `null`, `false` or an empty string.
async fn wait_in_page(browser: &Browser, what: &str, script: &str, args: &[Value]) -> Value {
    wait_for(what, || async move {
        let value = browser.execute(script, args.to_vec()).await;
        let nothing = value.is_null() || value == false || value == "";
        (!nothing).then_some(value)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_follows_an_order_and_a_dead_letter_through_the_console() {
    let stack = TestStack::start().await;
    stack.put_product(SKU, PRICE_CENTS, STOCK).await;
    let console = Console::start(&stack).await;
    let browser = Browser::start().await;
    let shots = Screenshots::new();

    overview_has_a_heading_and_navigation(&browser, &console).await;
    shots.take(&browser, "01-overview").await;

    let order_id = placing_an_order_shows_it_confirmed_live(&browser, &console).await;
    shots.take(&browser, "02-order-confirmed").await;

    saga_shows_the_events_in_order_with_their_causes(&browser, &console, &order_id).await;
    let saga = shots.take(&browser, "03-saga").await;
    if std::env::var("CONSOLE_README_SCREENSHOT").as_deref() == Ok("1") {
        let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/console.png");
        std::fs::write(readme, &saga).expect("writing docs/console.png");
    }

    let topic = stack.topics.order_created.clone();
    key_search_finds_the_orders_message(&browser, &console, &topic, &order_id).await;
    shots.take(&browser, "04-message-by-key").await;

    let group = stack.groups["inventory-service"].clone();
    inventory_lag_reaches_zero(&browser, &console, &group).await;
    shots.take(&browser, "05-group-lag").await;

    let (_, offset) = stack.publish_raw(&topic, POISON_KEY, b"not json").await;
    a_poison_message_is_dead_lettered_and_replayed(&browser, &console, &topic).await;
    shots.take(&browser, "06-dead-letter-replayed").await;
    the_replayed_message_is_back_on_its_topic(&browser, &console, &topic, offset).await;
    shots.take(&browser, "07-replayed-on-its-topic").await;

    orders_fit_a_phone_screen(&browser, &console).await;
    shots.take(&browser, "08-orders-on-a-phone").await;

    drop(browser);
    console.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_only_a_signed_in_administrator_gets_in() {
    let issuer = TestIssuer::generate("console-browser");
    let auth = issuer.auth.clone();
    let stack = TestStack::start_with(StackOptions {
        auth: Some(auth.clone()),
        ..StackOptions::default()
    })
    .await;
    stack.put_product(SKU, PRICE_CENTS, STOCK).await;
    let console = Console::start_with(&stack, Some(&auth)).await;
    let browser = Browser::start().await;
    let shots = Screenshots::new();

    // Nobody signed in: every page leads to the sign-in form.
    browser.goto(&console.url("/orders")).await;
    let url = browser.current_url().await;
    assert!(
        url.ends_with("/login"),
        "an anonymous visitor landed on {url}"
    );
    shots.take(&browser, "auth-01-sign-in").await;

    // A customer's token is a valid token, but not an administrator's.
    sign_in(&browser, &console, &issuer.token(CUSTOMER)).await;
    let refusal = wait_in_page(
        &browser,
        "the refusal of a customer's token",
        "return document.body.innerText.includes('administrators') ? document.body.innerText : null",
        &[],
    )
    .await;
    assert!(
        !refusal.as_str().unwrap().contains("Orders"),
        "a customer sees the console: {refusal}"
    );

    // The administrator signs in; the token is in an HttpOnly cookie.
    sign_in(&browser, &console, &auth.admin_token).await;
    overview_has_a_heading_and_navigation(&browser, &console).await;
    let cookies = browser.execute("return document.cookie", vec![]).await;
    assert!(
        !cookies
            .as_str()
            .unwrap_or_default()
            .contains("console_token"),
        "script can read the token: {cookies}"
    );
    shots.take(&browser, "auth-02-overview").await;

    // The console acts for the administrator: the order is placed with the
    // relayed token and its status arrives live.
    placing_an_order_shows_it_confirmed_live(&browser, &console).await;
    shots.take(&browser, "auth-03-order-confirmed").await;

    drop(browser);
    console.stop().await;
    stack.shutdown().await;
}

/// Pastes `token` into the sign-in form and sends it.
async fn sign_in(browser: &Browser, console: &Console, token: &str) {
    browser.goto(&console.url("/login")).await;
    let field = browser.find("textarea#token").await;
    browser.send_keys(&field, token).await;
    browser
        .click(
            &browser
                .find("form[action='/login'] button[type=submit]")
                .await,
        )
        .await;
    wait_for("the sign-in to leave /login", || async move {
        let url = browser.current_url().await;
        (!url.ends_with("/login")).then_some(())
    })
    .await;
}

/// a. The home page: a title, a heading, and links to each area.
async fn overview_has_a_heading_and_navigation(browser: &Browser, console: &Console) {
    browser.goto(&console.url("/")).await;
    let title = browser.execute("return document.title", vec![]).await;
    assert!(
        title.as_str().unwrap_or_default().contains("Overview"),
        "title: {title}"
    );
    let heading = browser.text(&browser.find("main h1").await).await;
    assert_eq!(heading, "Overview");
    let links = browser
        .execute(
            "return [...document.querySelectorAll('header nav a')].map(a => a.getAttribute('href'))",
            vec![],
        )
        .await;
    for wanted in ["/orders", "/topics", "/groups", "/dlq"] {
        assert!(
            links
                .as_array()
                .is_some_and(|links| links.iter().any(|l| l == wanted)),
            "navigation links {links} lack {wanted}"
        );
    }
}

/// b. The order form: the browser lands on the orders page with the new
/// order highlighted, whose status turns CONFIRMED with no reload. Returns
/// the order's id.
async fn placing_an_order_shows_it_confirmed_live(browser: &Browser, console: &Console) -> String {
    browser.goto(&console.url("/orders/new")).await;
    let customer = browser.find("#order-form input[name=userId]").await;
    browser.clear(&customer).await;
    browser.send_keys(&customer, CUSTOMER).await;
    let sku = browser.find("#order-form input[name=sku]").await;
    browser.clear(&sku).await;
    browser.send_keys(&sku, SKU).await;
    let quantity = browser.find("#order-form input[name=quantity]").await;
    browser.clear(&quantity).await;
    browser.send_keys(&quantity, "2").await;
    browser
        .click(&browser.find("#order-form button[type=submit]").await)
        .await;

    let landed = wait_for("the orders page after placing", || async move {
        let url = browser.current_url().await;
        url.contains("placed=").then_some(url)
    })
    .await;
    assert!(landed.contains("/orders?"), "landed on {landed}");
    // A mark on this document: gone if anything reloads the page.
    browser
        .execute("window.sameDocument = true; return null", vec![])
        .await;
    let order_id = browser.text(&browser.find("p.note a").await).await;
    assert!(
        order_id.starts_with("console-"),
        "placed order {order_id:?}"
    );

    let row = format!("tr.order[data-order=\"{order_id}\"]");
    let status = wait_in_page(
        browser,
        "the placed order's row to show CONFIRMED, sent by the live stream",
        "const badge = document.querySelector(arguments[0] + ' .status');
         const live = Number(document.documentElement.dataset.liveUpdates || 0) > 0;
         return live && badge && badge.textContent === 'CONFIRMED' ? badge.textContent : null",
        &[json!(row)],
    )
    .await;
    assert_eq!(status, "CONFIRMED");
    let same = browser
        .execute("return window.sameDocument === true", vec![])
        .await;
    assert_eq!(same, true, "the page was reloaded to show the new status");
    let highlighted = browser
        .execute(
            "return document.querySelector(arguments[0]).classList.contains('highlight')",
            vec![json!(row)],
        )
        .await;
    assert_eq!(highlighted, true, "the placed order is highlighted");
    order_id
}

/// c. The order's page: CONFIRMED, and the saga drawn as OrderCreated →
/// InventoryReserved → PaymentProcessed with an arrow from each cause.
async fn saga_shows_the_events_in_order_with_their_causes(
    browser: &Browser,
    console: &Console,
    order_id: &str,
) {
    // As a user would: follow the order's link from the orders table.
    browser
        .click(
            &browser
                .find(&format!("tr.order[data-order=\"{order_id}\"] a"))
                .await,
        )
        .await;
    let url = browser.current_url().await;
    assert_eq!(url, console.url(&format!("/orders/{order_id}")));
    let status = browser.text(&browser.find("#order-status").await).await;
    assert_eq!(status, "CONFIRMED");

    let expected = ["OrderCreated", "InventoryReserved", "PaymentProcessed"];
    let picture = wait_in_page(
        browser,
        "the saga picture's three events",
        "const types = [...document.querySelectorAll('svg.saga g.node text.type')]
             .map(t => t.textContent.replace(/^\\d+\\.\\s*/, ''));
         if (types.length < 3) return null;
         return { types, arrows: document.querySelectorAll('svg.saga path.arrow').length };",
        &[],
    )
    .await;
    assert_eq!(
        picture["types"],
        json!(expected),
        "saga events in DOM order"
    );
    assert_eq!(
        picture["arrows"], 2,
        "one causation arrow per caused event: {picture}"
    );
}

/// d. A topic's message page: the key search finds the order's message and
/// shows its envelope decoded.
async fn key_search_finds_the_orders_message(
    browser: &Browser,
    console: &Console,
    topic: &str,
    order_id: &str,
) {
    browser
        .goto(&console.url(&format!("/topics/{topic}")))
        .await;
    let key = browser.find("form.inline input[name=key]").await;
    browser.send_keys(&key, order_id).await;
    browser
        .click(&browser.find("form.inline button[type=submit]").await)
        .await;
    let found = wait_in_page(
        browser,
        "the order's message found by key",
        "const rows = [...document.querySelectorAll('#messages tr.message')];
         if (!location.search.includes('key=') || rows.length === 0) return null;
         return rows.map(r => ({
             key: r.dataset.key,
             type: r.querySelector('dd.event-type')?.textContent,
             order: r.querySelector('dl.envelope a[href^=\"/orders/\"]')?.textContent,
             json: r.querySelector('pre.json')?.textContent,
         }));",
        &[],
    )
    .await;
    let rows = found.as_array().expect("rows");
    assert_eq!(rows.len(), 1, "one message keyed {order_id}: {found}");
    let message = &rows[0];
    assert_eq!(message["key"], order_id);
    assert_eq!(message["type"], "OrderCreated");
    assert_eq!(
        message["order"], order_id,
        "the envelope's orderId, decoded"
    );
    assert!(
        message["json"]
            .as_str()
            .is_some_and(|body| body.contains(order_id)),
        "the body pretty-printed: {message}"
    );
}

/// e. The groups page lists the inventory group; its own page's total lag
/// reaches 0 (lag pages are not live: reloaded until then).
async fn inventory_lag_reaches_zero(browser: &Browser, console: &Console, group: &str) {
    browser.goto(&console.url("/groups")).await;
    browser
        .click(
            &browser
                .find(&format!("#groups tr[data-group=\"{group}\"] a"))
                .await,
        )
        .await;
    assert_eq!(
        browser.current_url().await,
        console.url(&format!("/groups/{group}"))
    );
    let page = browser.current_url().await;
    wait_for("inventory-service's total lag to reach 0", || {
        let page = page.clone();
        async move {
            browser.goto(&page).await;
            let total = browser.text(&browser.find("#lag-total").await).await;
            (total == "0").then_some(())
        }
    })
    .await;
    let partitions = browser.find_all("#lag tbody tr").await;
    assert!(
        !partitions.is_empty(),
        "the group has committed offsets to show"
    );
}

/// f. A message nobody can read lands in `order-created`'s dead letters with
/// its error; the Replay button replays it, and the page says so.
async fn a_poison_message_is_dead_lettered_and_replayed(
    browser: &Browser,
    console: &Console,
    topic: &str,
) {
    let page = console.url(&format!("/dlq/{topic}"));
    let error = wait_for("the poison message among the dead letters", || {
        let page = page.clone();
        async move {
            browser.goto(&page).await;
            let letters = browser
                .execute(
                    "return [...document.querySelectorAll('#letters tr.letter')]
                         .filter(r => r.querySelector('code').textContent === arguments[0])
                         .map(r => r.querySelector('td.error').textContent)",
                    vec![json!(POISON_KEY)],
                )
                .await;
            letters
                .as_array()
                .and_then(|errors| errors.first())
                .and_then(Value::as_str)
                .map(str::to_owned)
        }
    })
    .await;
    assert!(
        !error.is_empty() && error != "?",
        "the dead letter shows its error header, not {error:?}"
    );

    browser.click(&browser.find("#replay").await).await;
    let note = wait_in_page(
        browser,
        "the page to report the replay",
        "const note = document.querySelector('#replayed');
         return location.search.includes('replayed=') && note ? note.textContent : null",
        &[],
    )
    .await;
    let note = note.as_str().unwrap_or_default();
    assert!(
        note.starts_with("Replayed ") && !note.starts_with("Replayed 0 ") && note.contains(topic),
        "replay reported as {note:?}"
    );
}

/// f, continued. The replayed message is back on the source topic: the key
/// search shows it twice now, the replayed copy at a later offset.
async fn the_replayed_message_is_back_on_its_topic(
    browser: &Browser,
    console: &Console,
    topic: &str,
    poison_offset: i64,
) {
    let search = console.url(&format!("/topics/{topic}?key={POISON_KEY}"));
    let offsets = wait_for("the replayed message on the source topic", || {
        let search = search.clone();
        async move {
            browser.goto(&search).await;
            let offsets = browser
                .execute(
                    "return [...document.querySelectorAll('#messages tr.message')]
                         .filter(r => r.dataset.key === arguments[0])
                         .map(r => Number(r.dataset.offset))",
                    vec![json!(POISON_KEY)],
                )
                .await;
            let offsets: Vec<i64> = offsets
                .as_array()?
                .iter()
                .filter_map(Value::as_i64)
                .collect();
            (offsets.len() >= 2).then_some(offsets)
        }
    })
    .await;
    assert!(
        offsets.contains(&poison_offset) && offsets.iter().any(|o| *o > poison_offset),
        "the original at {poison_offset} and a replayed copy after it: {offsets:?}"
    );
}

/// The orders page at phone width scrolls only vertically.
async fn orders_fit_a_phone_screen(browser: &Browser, console: &Console) {
    browser.set_window_rect(PHONE.0, PHONE.1).await;
    browser.goto(&console.url("/orders")).await;
    let widths = browser
        .execute(
            "return { scroll: document.documentElement.scrollWidth, inner: window.innerWidth }",
            vec![],
        )
        .await;
    let (scroll, inner) = (
        widths["scroll"].as_i64().unwrap_or(i64::MAX),
        widths["inner"].as_i64().unwrap_or(0),
    );
    assert!(
        scroll <= inner + 1,
        "the orders page scrolls sideways at phone width: {widths}"
    );
}
