"""A scripted fake model server for end-to-end tests with the real agent CLIs.

It speaks what the CLIs call (see REAL-CLIS.md in the reference notes): OpenAI's Responses API and
ollama's probes (codex, local), Anthropic's Messages API (claude, opencode), Gemini's
``streamGenerateContent`` (gemini) and Chat Completions (OpenAI-compatible servers), all streamed.

    model = FakeModel(hello("HELLO.md"))   # create HELLO.md, edit it, say "Created and edited HELLO.md"
    await model.start()                    # model.url == "http://127.0.0.1:PORT"
    model.unauthorized = True              # every model call answers 401 like the vendor does
    model.calls("/v1/messages")            # what the CLI sent, headers included
    model.sent                             # the usage each answer reported (Script.tokens, per turn)
    await model.close()
"""

from .script import Append, Create, Script, Tokens, hello, say
from .server import FakeModel, Recorded, Sent

__all__ = ["Append", "Create", "FakeModel", "Recorded", "Script", "Sent", "Tokens", "hello", "say"]
