"""DSPy's side of the quality benchmark: MIPROv2 on the same task, model, seeds and metric.

Runs in its own virtualenv (`.venv-dspy`, from `bench/quality-dspy-requirements.txt`), as

    .venv-dspy/bin/python bench/_quality_dspy.py SPEC.json RESULT.json

and imports nothing of this project: `bench/quality.py` writes SPEC (the model server's URL,
the task app's baseline instruction and tool, the rows of each split, the runs and their
metric-call budgets) and reads RESULT.

The program is the example task app's, in DSPy: one `dspy.Predict` whose signature holds the
task app's system prompt as its instructions, and an adapter (`TaskAppAdapter`) that sends
exactly the task app's request: that instruction as the system message, the customer's
message as the user message, the `classify_intent` tool with `tool_choice: "required"`, the
same temperature and token cap; the label is read from the tool call's `intent`, and the
metric is the task app's reward (1.0 for the right label, else 0.0). Few-shot demos are
user/assistant turns before the message, the assistant turn a call of the same tool.

The LMs use DSPy's `litellm` engine, and litellm is told what the server enforces (tool
calls and JSON schemas, `declare_capabilities`): on DSPy 3.4's default engine an unlisted
model gets no `response_format`, and SmolLM2's free text then breaks MIPROv2's proposer
(measured: it raised `AdapterParseError` on its first instruction). Nothing is fetched:
`LITELLM_LOCAL_MODEL_COST_MAP=True`, no cache (`cache=False`), no other endpoint.

MIPROv2 runs as DSPy ships it (`auto=None`, explicit `num_candidates`), with one hook:
`num_trials` is chosen when the search starts, from the metric calls left in the run's
budget after DSPy's own bootstrapping, so that its metric calls match ours. Every metric
call is counted. Held-out rows are scored afterwards, one program call each; a call that
fails is reported as a failure, never as a 0.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price list download
os.environ.setdefault("LITELLM_TELEMETRY", "False")

import dspy  # noqa: E402
from dspy.adapters.base import Adapter  # noqa: E402
from dspy.teleprompt import MIPROv2  # noqa: E402
from dspy.utils.callback import BaseCallback  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


class Counter:
    """Counts calls of the metric, of the task model, and of every LM."""

    def __init__(self) -> None:
        self.metric_calls = 0
        self.task_calls = 0
        self.lm_calls = 0


COUNTER = Counter()


class LmCalls(BaseCallback):  # type: ignore[misc]
    """Counts every LM call, those of the copies MIPROv2's proposer makes included (an LM's
    own `history` misses them)."""

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        COUNTER.lm_calls += 1


def metric(example: Any, prediction: Any, trace: Any = None) -> float:
    """The task app's reward: 1.0 for an exact label match, else 0.0."""
    COUNTER.metric_calls += 1
    return 1.0 if getattr(prediction, "intent", None) == example.intent else 0.0


class TaskAppAdapter(Adapter):  # type: ignore[misc]
    """Formats and parses exactly as the example task app does (see the module doc)."""

    def __init__(self, tool: dict[str, Any], settings: dict[str, Any]) -> None:
        super().__init__()
        self.tool = tool
        self.settings = settings

    def messages(self, instruction: str, demos: list[Any], message: str) -> list[dict[str, Any]]:
        turns: list[dict[str, Any]] = [{"role": "system", "content": instruction}]
        name = self.tool["function"]["name"]
        for number, demo in enumerate(demos):
            turns.append({"role": "user", "content": demo["message"]})
            turns.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_demo_{number}", "type": "function",
                "function": {"name": name,
                             "arguments": json.dumps({"intent": demo["intent"]})}}]})
        turns.append({"role": "user", "content": message})
        return turns

    def __call__(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: list[Any],
                 inputs: dict[str, Any]) -> list[dict[str, Any]]:
        messages = self.messages(signature.instructions, demos, inputs["message"])
        kwargs = {k: v for k, v in lm_kwargs.items() if k in ("rollout_id", "n")}
        COUNTER.task_calls += 1
        outputs = lm(messages=messages, tools=[self.tool], tool_choice="required",
                     **self.settings, **kwargs)
        return [{"intent": self.intent(output)} for output in outputs]

    async def acall(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any,
                    demos: list[Any], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        return self(lm, lm_kwargs, signature, demos, inputs)

    @staticmethod
    def intent(output: Any) -> str:
        """The label of the tool call, as the task app reads it; raises when there is none."""
        calls = output.get("tool_calls") if isinstance(output, dict) else None
        if not calls:
            raise ValueError("the model did not call a tool")
        call = calls[0]
        function = call["function"] if isinstance(call, dict) else call.function
        arguments = function["arguments"] if isinstance(function, dict) else function.arguments
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
        label = args["intent"]
        if not isinstance(label, str):
            raise ValueError("the tool call's intent is not text")
        return label.strip()


class SupportIntents(dspy.Module):  # type: ignore[misc]
    """Classify a customer-support message from a banking app into one of its intents."""

    def __init__(self, instruction: str, adapter: TaskAppAdapter) -> None:
        super().__init__()
        self.classify = dspy.Predict(dspy.Signature("message: str -> intent: str", instruction))
        self._adapter = adapter

    def forward(self, message: str) -> Any:
        with dspy.context(adapter=self._adapter):
            return self.classify(message=message)


class BudgetedMIPROv2(MIPROv2):  # type: ignore[misc]
    """MIPROv2 whose number of trials is set, when its search starts, from the metric calls
    left in `budget` (DSPy's bootstrapping has spent some by then)."""

    def __init__(self, *args: Any, budget: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget
        self.bootstrap_calls = 0
        self.trials = 0
        self.candidates: list[str] = []

    def _optimize_prompt_parameters(self, program: Any, instruction_candidates: Any,
                                    demo_candidates: Any, evaluate: Any, valset: list[Any],
                                    num_trials: int, minibatch: bool, minibatch_size: int,
                                    minibatch_full_eval_steps: int, seed: int) -> Any:
        self.bootstrap_calls = COUNTER.metric_calls
        self.candidates = [str(text) for text in instruction_candidates[0]]
        self.trials = trials_within(self.budget - self.bootstrap_calls, len(valset),
                                    minibatch_size, minibatch_full_eval_steps)
        return super()._optimize_prompt_parameters(
            program, instruction_candidates, demo_candidates, evaluate, valset, self.trials,
            minibatch, minibatch_size, minibatch_full_eval_steps, seed)


def planned_calls(trials: int, val: int, minibatch: int, steps: int) -> int:
    """Metric calls of MIPROv2's search with `trials` minibatch trials, by its own schedule
    (`_optimize_prompt_parameters` in DSPy 3.4): the default program on the whole validation
    set, a minibatch per trial, and a full evaluation whenever the trial number (counting
    the full evaluations, which are trials of the study too) is a multiple of steps + 1, and
    at the last trial."""
    adjusted = trials + trials // steps + 1 + (1 if trials % steps else 0)
    calls, number = val, 1
    for _ in range(trials):
        trial_num = number + 1
        number += 1
        calls += minibatch
        if trial_num % (steps + 1) == 0 or trial_num == adjusted - 1:
            calls += val
            number += 1
    return calls


def trials_within(remaining: int, val: int, minibatch: int, steps: int) -> int:
    """The number of trials whose planned metric calls come closest to `remaining` (at
    least one trial; a tie goes to fewer calls)."""
    return min(range(1, 200),
               key=lambda t: (abs(planned_calls(t, val, minibatch, steps) - remaining),
                              planned_calls(t, val, minibatch, steps)))


def examples(rows: list[dict[str, Any]]) -> list[Any]:
    return [dspy.Example(message=row["text"], intent=row["label"]).with_inputs("message")
            for row in rows]


def score_test(program: Any, rows: list[dict[str, Any]]) -> tuple[dict[str, float], int]:
    """Per seed, the reward on each held-out row (one call each), and the failures."""
    rewards: dict[str, float] = {}
    failures = 0
    for row, example in zip(rows, examples(rows), strict=True):
        try:
            prediction = program(message=example.message)
        except Exception:  # noqa: BLE001 - a failed call is counted, never scored
            failures += 1
            continue
        rewards[str(row["seed"])] = 1.0 if prediction.intent == example.intent else 0.0
    return rewards, failures


def run(spec: dict[str, Any], entry: dict[str, Any], task_lm: Any, prompt_lm: Any,
        adapter: TaskAppAdapter) -> dict[str, Any]:
    """One MIPROv2 run (`entry`: name, demo limits, metric-call budget)."""
    COUNTER.metric_calls = COUNTER.task_calls = COUNTER.lm_calls = 0
    started = time.monotonic()
    optimizer = BudgetedMIPROv2(
        metric=metric, prompt_model=prompt_lm, task_model=task_lm, auto=None,
        num_candidates=spec["num_candidates"], num_threads=spec["num_threads"],
        max_bootstrapped_demos=entry["max_bootstrapped_demos"],
        max_labeled_demos=entry["max_labeled_demos"], max_errors=10**6, seed=spec["seed"],
        budget=entry["metric_calls"])
    program = SupportIntents(spec["instruction"], adapter)
    best = optimizer.compile(program, trainset=examples(spec["train"]),
                             valset=examples(spec["val"]), num_trials=1,
                             minibatch_size=spec["minibatch_size"])
    optimize_calls = COUNTER.metric_calls
    task_calls, lm_calls = COUNTER.task_calls, COUNTER.lm_calls
    seconds = time.monotonic() - started
    test, failures = score_test(best, spec["test"])
    return {
        "name": entry["name"], "budget": entry["metric_calls"], "metric_calls": optimize_calls,
        "bootstrap_calls": optimizer.bootstrap_calls, "num_trials": optimizer.trials,
        "task_model_calls": task_calls,
        "prompt_model_calls": lm_calls - task_calls,
        "instruction": best.classify.signature.instructions,
        "candidates": optimizer.candidates,
        "demos": len(best.classify.demos), "val_score": getattr(best, "score", None),
        "seconds": seconds, "test": test, "test_failures": failures,
    }


def declare_capabilities(model: str) -> None:
    """Tells litellm what the local model server does: tool calls, and JSON-schema
    `response_format`, both enforced by a grammar. DSPy's adapters then ask for structured
    output when free text does not parse (ChatAdapter's JSON fallback), as they do with any
    provider that supports it. Without it DSPy knows nothing of an unlisted model: on its
    default engine it sends no `response_format`, and on litellm's only `json_object`."""
    import litellm

    litellm.register_model({model: {
        "litellm_provider": "openai", "mode": "chat", "supports_function_calling": True,
        "supports_response_schema": True, "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0}})


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    with open(spec_path) as file:
        spec = json.load(file)
    policy = spec["policy"]
    model = f"openai/{spec['model']}"
    declare_capabilities(model)
    client = {"api_base": spec["model_url"], "api_key": "unused", "cache": False,
              "num_retries": 3, "timeout": spec["call_timeout"], "engine": "litellm"}
    task_lm = dspy.LM(model, **client)
    prompt_lm = dspy.LM(model, **client, **spec["proposer"])
    adapter = TaskAppAdapter(spec["tool"], {"temperature": policy["temperature"],
                                            "max_tokens": policy["max_tokens"]})
    dspy.configure(lm=task_lm, callbacks=[LmCalls()])
    result: dict[str, Any] = {"dspy_version": dspy.__version__, "runs": []}
    baseline, failures = score_test(SupportIntents(spec["instruction"], adapter), spec["test"])
    result["baseline_test"], result["baseline_test_failures"] = baseline, failures
    for entry in spec["runs"]:
        try:
            result["runs"].append(run(spec, entry, task_lm, prompt_lm, adapter))
        except Exception as error:  # noqa: BLE001 - reported as the run's error, no row faked
            result["runs"].append({"name": entry["name"], "error": repr(error)[:500]})
        with open(result_path, "w") as file:  # what is done so far survives a timeout
            json.dump(result, file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
