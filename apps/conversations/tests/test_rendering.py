from apps.conversations.rendering import render_markdown


def test_raw_html_from_the_model_is_shown_as_text():
    html = render_markdown('Hi <script>alert("x")</script> <img src=x onerror=alert(1)>')
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html


def test_dangerous_links_lose_their_href_and_code_is_highlighted():
    html = render_markdown("[x](javascript:alert(1)) [ok](https://example.com)\n\n```python\nprint(1)\n```")
    assert "javascript:" not in html
    assert 'href="https://example.com"' in html
    assert 'class="codehilite"' in html and '<span class="nb">print</span>' in html


def test_generated_titles_are_cleaned_to_a_short_line():
    from apps.conversations.generation import clean_title

    assert clean_title('"Trip to Lisbon"\nSome more text') == "Trip to Lisbon"
    assert clean_title("Title: Baking bread at home.") == "Baking bread at home"
    assert clean_title("Bien sûr, bonjour! I am Élise, a friendly and compassionate person") == (
        "Bien sûr, bonjour! I am Élise, a friendly"
    )
    assert clean_title("   ") == ""


def test_only_inference_workers_warm_the_engine(monkeypatch):
    from apps.conversations import engine_runtime

    loads = []
    monkeypatch.setattr(engine_runtime, "get_engine", lambda: loads.append("loaded"))
    assert engine_runtime.warm_up_in_background(["ingest", "default"]) is False
    assert engine_runtime.warm_up_in_background(["inference"]) is True
    for thread in __import__("threading").enumerate():
        if thread.name == "engine-warmup":
            thread.join(5)
    assert loads == ["loaded"]
