//! End to end in a real browser: the server on 127.0.0.1:0, Debian's chromedriver on a free
//! port, headless Chromium driven over WebDriver (fantoccini). A person's path: open the page,
//! choose ../shared/testdata/bus.jpg, press Segment, read the table, pick a row; then try a
//! text file and read the error. Then, against a server started with `--api-key`: the page
//! asks for the key, refuses to work without it, keeps it in the tab's session storage and
//! sends it. Screenshots land in target/ for a human to look at.
//! `make test` installs chromium and chromium-driver (scripts/setup-test.sh).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long a page step may take before the test gives up (a bound, not a sleep: waits end
/// as soon as the element shows up).
const STEP: Duration = Duration::from_secs(60);

/// chromedriver as a child process; killed when dropped, so a failing test leaves nothing.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        // Bind :0 to learn a free port, release it, hand it to chromedriver. Another process
        // could grab it in between; then chromedriver fails to start and the test says so.
        let port = common::free_port();
        let log = tmp().join("chromedriver.log");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver not found: run `make setup` (apt-get install chromium chromium-driver)");
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        // Wait for it to listen: its /status answers once it is up.
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{}/status", driver.url)).send().await {
                if r.status().is_success() {
                    return driver;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "chromedriver did not answer on {} within 10 s; see {}",
            driver.url,
            log.display()
        );
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/tmp` (Cargo's scratch folder for integration tests).
fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// `target/`, where the screenshots go.
fn target_dir() -> PathBuf {
    tmp()
        .parent()
        .expect("CARGO_TARGET_TMPDIR is target/tmp")
        .to_path_buf()
}

async fn connect(driver: &ChromeDriver, profile: &Path) -> Client {
    // Headless, and quiet on the network: no background fetches, no component updates, and
    // every host name except localhost resolves to nothing, so the browser cannot reach
    // anything but our server even if some feature tries.
    let args = [
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-default-apps".into(),
        "--disable-extensions".into(),
        "--no-first-run".into(),
        "--no-default-browser-check".into(),
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1".into(),
        "--window-size=1280,1100".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), json!({ "args": args }));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("start a Chromium session through chromedriver")
}

async fn js(c: &Client, script: &str) -> anyhow::Result<Value> {
    c.execute(script, vec![])
        .await
        .with_context(|| format!("script failed: {script}"))
}

async fn screenshot(c: &Client, name: &str) -> anyhow::Result<PathBuf> {
    let png = c.screenshot().await?;
    let path = target_dir().join(name);
    std::fs::write(&path, png)?;
    eprintln!("screenshot: {}", path.display());
    Ok(path)
}

async fn choose_file(c: &Client, path: &Path) -> anyhow::Result<()> {
    let input = c.find(Locator::Css("#image")).await?;
    input.clear().await?;
    input.send_keys(&path.display().to_string()).await?;
    Ok(())
}

/// The person's path through the page; returns on the first failed expectation.
async fn walk_through(c: &Client, base: &str) -> anyhow::Result<()> {
    c.goto(&format!("{base}/")).await?;
    // app.js ran (under the CSP) and fetched the model list.
    c.wait()
        .at_most(STEP)
        .for_element(Locator::XPath(
            "//p[@id='model-name'][contains(., 'yolov8n-seg-320')]",
        ))
        .await
        .context("the model name never appeared: app.js did not run or /v1/models failed")?;

    let bus = common::shared().join("testdata").join("bus.jpg");
    let bus = bus.canonicalize().context("../shared/testdata/bus.jpg")?;
    choose_file(c, &bus).await?;
    c.wait()
        .at_most(STEP)
        .for_element(Locator::Css("#drop.has-file"))
        .await?;
    c.find(Locator::Css("#segment")).await?.click().await?;
    c.wait()
        .at_most(STEP)
        .for_element(Locator::Css("#output[data-state='done']"))
        .await
        .context("no result shown after pressing Segment")?;

    let classes = js(c, "return [...document.querySelectorAll('#detections tbody th')].map(e => e.textContent.trim())").await?;
    let classes: Vec<String> = serde_json::from_value(classes)?;
    ensure!(
        classes.iter().any(|n| n == "bus"),
        "table lists no bus: {classes:?}"
    );
    ensure!(
        classes.iter().any(|n| n == "person"),
        "table lists no person: {classes:?}"
    );

    let img = js(c, "const i = document.getElementById('result-image'); return [i.complete, i.naturalWidth, i.naturalHeight, i.alt]").await?;
    ensure!(img[0] == json!(true), "result image not loaded: {img}");
    ensure!(
        (img[1].clone(), img[2].clone()) == (json!(810), json!(1080)),
        "result image is not the photo's size 810x1080: {img}"
    );
    ensure!(
        img[3].as_str().unwrap_or("").contains("bus"),
        "alt text does not say what was found: {img}"
    );

    let counts = c.find(Locator::Css("#counts")).await?.text().await?;
    ensure!(
        counts.contains("bus") && counts.contains("person"),
        "per-class counts: {counts:?}"
    );
    let timing = c.find(Locator::Css("#timing")).await?.text().await?;
    ensure!(
        timing.contains("yolov8n-seg-320") && timing.contains("ms"),
        "timing line: {timing:?}"
    );

    // Pick the first person: its button is pressed and the canvas dims everything else.
    let row = classes
        .iter()
        .position(|n| n == "person")
        .expect("checked above")
        + 1;
    let button = c
        .find(Locator::Css(&format!(
            "#detections tbody tr:nth-child({row}) button"
        )))
        .await?;
    button.click().await?;
    ensure!(
        button.attr("aria-pressed").await?.as_deref() == Some("true"),
        "row button not pressed"
    );
    // The mask decoded from COCO RLE in the browser: the only clear (undimmed) pixels are
    // inside the selected box (the table's rounded box, so 1 px slack), and they cover a good
    // part of it. A transposed or shifted decode would leave clear pixels outside.
    let clear = js(c, "const c = document.getElementById('highlight'); \
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
        const b = document.querySelector('#detections tbody tr.selected td:last-child') \
            .textContent.split(',').map(Number); \
        let inside = 0, outside = 0; \
        for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) { \
          if (d[(y * c.width + x) * 4 + 3] !== 0) continue; \
          if (x >= b[0] - 1 && x <= b[2] + 1 && y >= b[1] - 1 && y <= b[3] + 1) inside++; else outside++; } \
        return [inside, outside, (b[2] - b[0]) * (b[3] - b[1]), c.width, c.height]").await?;
    let n = |i: usize| clear[i].as_u64().unwrap_or(0);
    ensure!(
        (n(3), n(4)) == (810, 1080) && n(1) == 0 && n(0) * 10 > n(2) * 3,
        "highlight canvas (clear inside box, clear outside, box area, w, h): {clear}"
    );
    js(c, "window.scrollTo(0, 0)").await?;
    screenshot(c, "browser-screenshot.png").await?;

    // Background edits: transparent, then a blur; each shown in place and downloadable.
    for (mode, mime) in [("transparent", "image/png"), ("blur", "image/jpeg")] {
        c.find(Locator::Css("#bg-mode"))
            .await?
            .select_by_value(mode)
            .await?;
        c.find(Locator::Css("#bg-apply")).await?.click().await?;
        c.wait()
            .at_most(STEP)
            .for_element(Locator::Css(&format!(
                "#result-image[data-background='{mode}']"
            )))
            .await
            .with_context(|| format!("the {mode} background was never shown"))?;
        // The picture shown and offered for download: its type, size, and (transparent) alpha
        // outside the objects only: clear in a corner of the sky, opaque at the bus.
        let got = c
            .execute_async(
                "const done = arguments[0]; (async () => { \
                   await document.getElementById('result-image').decode(); \
                   const a = document.getElementById('bg-download'); \
                   const img = document.getElementById('result-image'); \
                   const cv = new OffscreenCanvas(img.naturalWidth, img.naturalHeight); \
                   const g = cv.getContext('2d'); g.drawImage(img, 0, 0); \
                   const alpha = (x, y) => g.getImageData(x, y, 1, 1).data[3]; \
                   done([a.type, cv.width, cv.height, alpha(5, 5), alpha(400, 500), a.hidden || a.href !== img.src, a.download]); \
                 })().catch((e) => done(String(e)));",
                vec![],
            )
            .await?;
        let opaque_corner = if mode == "transparent" { 0 } else { 255 };
        ensure!(
            got == json!([mime, 810, 1080, opaque_corner, 255, false, got[6]])
                && got[6].as_str().is_some_and(|n| n.starts_with(&format!("segserve-{mode}."))),
            "{mode}: downloaded picture (type, w, h, alpha at a corner, alpha at the bus, link hidden, name): {got}"
        );
    }
    screenshot(c, "browser-background.png").await?;
    c.find(Locator::Css("#bg-mode"))
        .await?
        .select_by_value("keep")
        .await?;
    c.find(Locator::Css("#bg-apply")).await?.click().await?;

    // Phone-sized: one column, nothing wider than the screen.
    c.set_window_size(390, 844).await?;
    let overflow = js(
        c,
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
    )
    .await?;
    ensure!(
        overflow.as_i64() == Some(0),
        "page scrolls sideways on a phone-sized screen by {overflow}px"
    );
    js(c, "document.getElementById('summary').scrollIntoView()").await?;
    screenshot(c, "browser-screenshot-phone.png").await?;
    c.set_window_size(1280, 1100).await?;

    // Without JavaScript the form posts to PixelLib's /segmentfrontend (form.submit() skips
    // app.js's handler, as a script-less browser would): a result page with the photo inline.
    js(c, "document.getElementById('upload').submit()").await?;
    c.wait()
        .at_most(STEP)
        .for_element(Locator::Css("img.result-img"))
        .await
        .context("/segmentfrontend showed no result image")?;
    let img = js(c, "const i = document.querySelector('img.result-img'); \
        return [i.complete, i.naturalWidth, i.naturalHeight, i.src.slice(0, 23), document.body.innerText]").await?;
    ensure!(
        img[0] == json!(true) && img[1] == json!(810) && img[2] == json!(1080),
        "/segmentfrontend image (complete, width, height): {} {} {}",
        img[0],
        img[1],
        img[2]
    );
    ensure!(
        img[3] == json!("data:image/jpeg;base64,"),
        "not a data URL: {}",
        img[3]
    );
    let text = img[4].as_str().unwrap_or("");
    ensure!(
        text.contains("bus") && text.contains("person"),
        "frontend page text: {text}"
    );
    screenshot(c, "browser-screenshot-frontend.png").await?;
    c.goto(&format!("{base}/")).await?;

    // A text file: the server refuses it and the page says so in words.
    let text = tmp().join("not-a-photo.txt");
    std::fs::write(&text, "this is not a photo\n")?;
    choose_file(c, &text).await?;
    c.find(Locator::Css("#segment")).await?.click().await?;
    let error = c
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("#error:not([hidden])"))
        .await
        .context("no error message for a text file")?;
    let message = error.text().await?;
    ensure!(
        message.contains("not a photo"),
        "error message: {message:?}"
    );
    ensure!(
        error.attr("data-error-type").await?.as_deref() == Some("unsupported_media_type"),
        "error type"
    );
    screenshot(c, "browser-screenshot-error.png").await?;

    // Over the body limit (the server runs with --max-body-bytes 1000000): refused from its
    // Content-Length, before the body is read, and the page still shows why.
    let big = tmp().join("too-large.jpg");
    let mut bytes = std::fs::read(&bus)?;
    bytes.resize(1_200_000, 0);
    std::fs::write(&big, bytes)?;
    choose_file(c, &big).await?;
    c.find(Locator::Css("#segment")).await?.click().await?;
    let error = c
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("#error[data-error-type='payload_too_large']"))
        .await
        .context("no 'too large' message for a file over the body limit")?;
    let message = error.text().await?;
    ensure!(message.contains("too large"), "error message: {message:?}");
    Ok(())
}

/// The key the `--api-key` server wants.
const KEY: &str = "s3cret-key";

/// The person's path through the page of a server that wants an API key.
async fn walk_through_with_key(c: &Client, base: &str) -> anyhow::Result<()> {
    c.goto(&format!("{base}/")).await?;
    // /v1/models answered 401, so the page shows the key field.
    c.wait()
        .at_most(STEP)
        .for_element(Locator::Css("#key-box:not([hidden])"))
        .await
        .context("no API key field on a server that wants a key")?;
    let kind = js(c, "return document.getElementById('api-key').type").await?;
    ensure!(
        kind == json!("password"),
        "the key field is {kind}, not a password field"
    );
    let bus = common::shared().join("testdata/bus.jpg").canonicalize()?;
    choose_file(c, &bus).await?;

    // No key, then a wrong one: refused, and the page says why.
    for (key, says) in [("", "needs an API key"), ("wrong-key", "not accepted")] {
        let field = c.find(Locator::Css("#api-key")).await?;
        field.clear().await?;
        if !key.is_empty() {
            field.send_keys(key).await?;
        }
        c.find(Locator::Css("#segment")).await?.click().await?;
        let error = c
            .wait()
            .at_most(STEP)
            .for_element(Locator::Css("#error[data-error-type='unauthorized']"))
            .await
            .with_context(|| format!("no 'unauthorized' message with key {key:?}"))?;
        let message = error.text().await?;
        ensure!(
            message.contains(says),
            "error with key {key:?}: {message:?}"
        );
        js(c, "document.getElementById('error').dataset.errorType = ''").await?;
    }

    // The right key: the photo is segmented, and the model list unlocks.
    let field = c.find(Locator::Css("#api-key")).await?;
    field.clear().await?;
    field.send_keys(KEY).await?;
    c.find(Locator::Css("#segment")).await?.click().await?;
    c.wait()
        .at_most(STEP)
        .for_element(Locator::Css("#output[data-state='done']"))
        .await
        .context("no result with the right key")?;
    let classes = js(c, "return [...document.querySelectorAll('#detections tbody th')].map(e => e.textContent.trim())").await?;
    ensure!(
        classes
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == "bus")),
        "table lists no bus: {classes}"
    );
    let stored = js(c, "return sessionStorage.getItem('segserve.apiKey')").await?;
    ensure!(stored == json!(KEY), "session storage holds {stored}");
    screenshot(c, "browser-screenshot-api-key.png").await?;

    // A reload in the same tab keeps the key: the field is filled and the model list loads.
    c.goto(&format!("{base}/")).await?;
    c.wait()
        .at_most(STEP)
        .for_element(Locator::XPath(
            "//p[@id='model-name'][contains(., 'yolov8n-seg-320')]",
        ))
        .await
        .context("the stored key was not sent after a reload")?;
    let value = js(c, "return document.getElementById('api-key').value").await?;
    ensure!(value == json!(KEY), "key field after reload: {value}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_page_segments_a_photo_in_headless_chromium() {
    let server = common::spawn_server(&["--max-body-bytes", "1000000"]).await;
    let driver = ChromeDriver::start().await;
    let profile = tmp().join(format!("chromium-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let client = connect(&driver, &profile).await;
    let base = server.url("");
    let mut outcome = walk_through(&client, &base).await;
    if outcome.is_ok() {
        // The same browser, against a server that wants a key (another origin, so a fresh
        // session storage).
        let keyed = common::spawn_server(&["--sessions", "1", "--api-key", KEY]).await;
        outcome = walk_through_with_key(&client, &keyed.url("")).await;
    }
    if outcome.is_err() {
        let _ = screenshot(&client, "browser-screenshot-failure.png").await;
    }
    // Always end the session (it quits Chromium) before reporting.
    let _ = client.close().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
    if let Err(e) = outcome {
        panic!("{e:#}");
    }
}
