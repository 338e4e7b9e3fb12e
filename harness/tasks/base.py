"""What a task is: train / validation / test problems, how a problem becomes chat messages, and its verifier.

A verifier is a plain module-level callable `(completion: str, answer: str) -> float` (picklable, so
harness.tasks.verify can run it in a separate process with a time limit). Model output is only
ever parsed as text: never executed, never passed to eval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

Verifier = Callable[[str, str], float]


@dataclass(frozen=True)
class Problem:
    question: str  # the problem text that fills {question} in the prompt template
    answer: str  # the reference answer, as text


@dataclass
class Task:
    name: str
    train: list[Problem]  # training prompts
    val: list[Problem]  # validation: eval during training, the report's lr choice (task.num_val)
    eval: list[Problem]  # test: the final eval, the reported accuracy (task.num_eval)
    verifier: Verifier
    prompt_template: str
    system_prompt: Optional[str] = None
    answer_template: str = "{answer}"  # how a reference answer is written as a completion (trainer=sft)

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        """Chat messages for one problem (the tokenizer's chat template turns them into tokens)."""
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        msgs.append({"role": "user", "content": self.prompt_template.replace("{question}", problem.question)})
        return msgs

    def target(self, problem: Problem) -> str:
        """The reference answer written as a completion the verifier accepts (SFT's target text)."""
        return self.answer_template.replace("{answer}", problem.answer)
