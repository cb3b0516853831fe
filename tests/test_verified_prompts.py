"""configs/prompts/verified.jsonl, the verifiable prompt set of the `verified` benchmark: every
reference is itself right. Each code item's tests pass a solution written here and fail a stub; each
math answer is the value computed here; each SQL reference returns what another correct query
returns, and a wrong one does not match; each constraint is followed by a response written here and
broken by another."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from moaa.config import PromptSourceConfig, SandboxConfig
from moaa.rows import Reference
from moaa.sources import load_prompts
from moaa.verify.answer import check_answer
from moaa.verify.code_tests import check_tests
from moaa.verify.constraints import check_constraints
from moaa.verify.sql import check_sql
from tests.conftest import ROOT

PATH = ROOT / "configs/prompts/verified.jsonl"
ITEMS = {row["id"]: row for row in map(json.loads, PATH.read_text(encoding="utf-8").splitlines())}

SOLUTIONS = {
    "code-001": "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)",
    "code-002": "def reverse_words(sentence):\n    return ' '.join(reversed(sentence.split()))",
    "code-003": "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))",
    "code-004": "def fizzbuzz(n):\n    return ['FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0\n"
    "            else 'Buzz' if i % 5 == 0 else str(i) for i in range(1, n + 1)]",
    "code-005": "def second_largest(nums):\n    top = sorted(set(nums))\n    return top[-2] if len(top) > 1 else None",
    "code-006": "def flatten(lists):\n    return [x for part in lists for x in part]",
    "code-007": "from collections import Counter\ndef char_frequency(s):\n    return dict(Counter(s))",
    "code-008": "from itertools import accumulate\ndef running_total(nums):\n    return list(accumulate(nums))",
    "code-009": "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a",
    "code-010": "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32",
    "code-011": "def remove_duplicates(items):\n    return list(dict.fromkeys(items))",
    "code-012": "def is_anagram(a, b):\n    norm = lambda s: sorted(s.replace(' ', '').lower())\n"
    "    return norm(a) == norm(b)",
    "code-013": "def digit_sum(n):\n    return sum(int(d) for d in str(n))",
    "code-014": "def merge_sorted(a, b):\n    return sorted(a + b)",
    "code-015": "def chunk(items, size):\n    return [items[i:i + size] for i in range(0, len(items), size)]",
    "code-016": "def max_profit(prices):\n    best, low = 0, float('inf')\n    for p in prices:\n"
    "        low = min(low, p)\n        best = max(best, p - low)\n    return best",
    "code-017": "def roman_to_int(s):\n    v = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}\n"
    "    total = 0\n    for a, b in zip(s, s[1:] + ' '):\n"
    "        total += -v[a] if b != ' ' and v[b] > v[a] else v[a]\n    return total",
    "code-018": "def longest_word(sentence):\n    return max(sentence.split(), key=len)",
    "code-019": "def is_palindrome(s):\n    t = [c.lower() for c in s if c.isalnum()]\n    return t == t[::-1]",
    "code-020": "def capitalize_words(s):\n    return ' '.join(w[:1].upper() + w[1:] for w in s.split(' '))",
}
ANSWERS = {  # each final answer computed from its question's numbers
    "math-001": 12 * 18 - 25, "math-002": (240 + 150) / (3 + 2), "math-003": 4 * 3.50 + 6 * 1.25,
    "math-004": 15 * (46 / 2 - 15), "math-005": 28 - 28 * 3 // 7, "math-006": round(80 * 1.15 * 0.90, 2),
    "math-007": sum(range(2, 41, 2)), "math-008": math.ceil(412 / 35), "math-009": 147 // 3 + 1,
    "math-010": 500 * 0.6 / 3, "math-011": 5 * 24 - (20 + 22 + 27 + 30), "math-012": 14 // 2 * 3,
    "math-013": 45 / 6 * 4, "math-014": abs((3 * 30 + 40 * 0.5) - 40 * 6), "math-015": 64 * 5 // 8,
    "math-016": 1200 * 0.05 * 3, "math-017": 350 / 100 * 6,
    "math-018": next(4 * d for d in range(1, 100) if 4 * d + 20 == 2 * (d + 20)),
    "math-019": 3.75 * 60, "math-020": "1/6",
}  # fmt: skip
QUERIES = {  # (another correct query, a wrong one)
    "sql-001": ("SELECT department, COUNT(id) AS n FROM employees GROUP BY 1 ORDER BY n DESC",
                "SELECT department, COUNT(*) FROM employees GROUP BY department ORDER BY COUNT(*)"),
    "sql-002": ("SELECT department, SUM(salary) * 1.0 / COUNT(*) FROM employees GROUP BY department",
                "SELECT department, MAX(salary) FROM employees GROUP BY department"),
    "sql-003": ("SELECT name FROM employees WHERE salary >= 65001 ORDER BY name ASC",
                "SELECT name FROM employees WHERE salary >= 65000 ORDER BY name"),
    "sql-004": ("SELECT name, department FROM employees e WHERE NOT EXISTS (SELECT 1 FROM employees x WHERE "
                "x.department = e.department AND x.salary > e.salary)",
                "SELECT name, department FROM employees GROUP BY department HAVING MIN(salary)"),
    "sql-005": ("SELECT name FROM employees WHERE hired LIKE '201%' ORDER BY hired ASC",
                "SELECT name FROM employees WHERE hired < '2020-01-01' ORDER BY name"),
    "sql-006": ("SELECT department FROM (SELECT department, SUM(salary) s FROM employees GROUP BY department) "
                "ORDER BY s DESC LIMIT 1", "SELECT department FROM employees ORDER BY salary ASC LIMIT 1"),
    "sql-007": ("SELECT name, (SELECT SUM(amount) FROM orders WHERE customer_id = customers.id) AS total FROM "
                "customers WHERE total IS NOT NULL ORDER BY total DESC LIMIT 3",
                "SELECT c.name, SUM(o.amount) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id "
                "ORDER BY SUM(o.amount) LIMIT 3"),
    "sql-008": ("SELECT c.name FROM customers c LEFT JOIN orders o ON o.customer_id = c.id WHERE o.id IS NULL",
                "SELECT name FROM customers WHERE city = 'Rome'"),
    "sql-009": ("SELECT city, COUNT(o.id) FROM customers c JOIN orders o ON c.id = o.customer_id GROUP BY city",
                "SELECT city, COUNT(*) FROM customers GROUP BY city"),
    "sql-010": ("SELECT id FROM orders WHERE strftime('%Y-%m', created_at) = '2024-03'",
                "SELECT id FROM orders WHERE created_at < '2024-03-31'"),
}  # fmt: skip
RESPONSES = {  # (a response that follows the instructions, one that does not)
    "constraints-001": (
        "The ocean is vast and deep. Waves roll in from far away and the tide keeps time.",
        "The ocean, vast and deep, rolls on.",
    ),
    "constraints-002": (
        "the sun climbs slowly over the quiet hills and the sky turns from deep blue to pale gold "
        "while birds begin to sing and the cool air of the morning warms a little with every "
        "minute that passes by",
        "The sun rises over the hills.",
    ),
    "constraints-003": (
        "* It strengthens the heart.\n* It clears the mind.\n* It costs nothing.",
        "* It strengthens the heart.\n* It clears the mind.",
    ),
    "constraints-004": (
        "<<Whiskers Comes Home>>\nAfter three days in the rain, the cat scratched at the door.",
        "Whiskers Comes Home: after three days the cat came back.",
    ),
    "constraints-005": (
        "A CPU runs a computer's instructions: it fetches, decodes and executes them very quickly.",
        "word " * 60,
    ),
    "constraints-006": (
        "Set aside a fixed sum each payday. Is there anything else I can help with?",
        "Set aside a fixed sum each payday.",
    ),
    "constraints-007": (
        "Green tea comes from the leaves of Camellia sinensis.\n***\nIt is steamed or pan-fired soon after picking.",
        "Green tea is healthy.\n***\nIt is tasty.\n***\nIt is cheap.",
    ),
    "constraints-008": ('{"primary_colors": ["red", "yellow", "blue"]}', "Red, yellow and blue."),
    "constraints-009": (
        "Grey sky, umbrella\nopens over a puddle\nsmall rain, small ripples",
        "Grey sky and soft rain\nfalling on the quiet street\nsmall drops, small ripples",
    ),
    "constraints-010": (
        "I LOVE THE WARM SUMMER DAYS WHEN THE CHILDREN PLAY OUTSIDE AND THE WHOLE FAMILY EATS ICE CREAM TOGETHER.",
        "Summer is the season of long warm days.",
    ),
    "constraints-011": (
        '"My favorite food is ramen. The broth warms me on cold days."',
        "My favorite food is ramen. The broth warms me on cold days.",
    ),
    "constraints-012": (
        "Dear Mia, come over for dinner on Friday at seven!\nP.S. Bring your guitar.",
        "Dear Mia, come over for dinner on Friday at seven!",
    ),
    "constraints-013": (
        "These headphones last 30 hours. *Noise cancelling* keeps the world out, and *fast "
        "charging* gives you 5 hours in 10 minutes.",
        "These headphones last 30 hours.",
    ),
    "constraints-014": (
        "Silver moon above,\nyou paint the sleeping fields,\nquiet lantern high,\nthe owls know your name.",
        "Silver moon in the dark,\nyou light the night.",
    ),
    "constraints-015": ("Dear [name],\nWelcome to [street]! Knock any time.", "Dear neighbor, welcome!"),
    "constraints-016": ("Zany zebras zigzag past lazy zoo zookeepers.", "Silly snakes slide south."),
}


def test_the_set_is_big_enough_and_every_row_loads_with_its_reference():
    assert Counter(row["category"] for row in ITEMS.values()) == {"code": 20, "math": 20, "sql": 10, "constraints": 16}
    prompts = load_prompts(PromptSourceConfig(path=str(PATH))).prompts
    assert len(prompts) == 66 and all(p.reference is not None and p.reference.kinds for p in prompts)
    assert set(SOLUTIONS) | set(ANSWERS) | set(QUERIES) | set(RESPONSES) == set(ITEMS)


def reference(item_id: str) -> Reference:
    return Reference.from_dict(ITEMS[item_id]["reference"])


@pytest.mark.parametrize("item_id", sorted(SOLUTIONS))
def test_each_code_items_tests_pass_a_solution_and_fail_a_stub(item_id):
    solution = SOLUTIONS[item_id]
    limits = SandboxConfig(cpu_s=5, wall_s=20)
    assert check_tests(reference(item_id), f"```python\n{solution}\n```", limits).status == "pass"
    name = solution.split("def ", 1)[1].split("(", 1)[0]
    assert check_tests(reference(item_id), f"```python\ndef {name}(*args):\n    return None\n```", limits).failed


@pytest.mark.parametrize("item_id", sorted(ANSWERS))
def test_each_math_answer_is_the_computed_value(item_id):
    value = ANSWERS[item_id]
    shown = value if isinstance(value, str) else f"{value:g}"
    assert check_answer(reference(item_id).answer, f"The answer is {shown}.").status == "pass"
    assert check_answer(reference(item_id).answer, "The answer is 7.").failed


@pytest.mark.parametrize("item_id", sorted(QUERIES))
def test_each_sql_reference_agrees_with_another_correct_query(item_id):
    right, wrong = QUERIES[item_id]
    assert check_sql(reference(item_id), f"```sql\n{right}\n```", 5).status == "pass"
    assert check_sql(reference(item_id), f"```sql\n{wrong}\n```", 5).failed


@pytest.mark.parametrize("item_id", sorted(RESPONSES))
def test_each_constraint_is_followed_by_one_response_and_broken_by_another(item_id):
    ref, (good, bad) = reference(item_id), RESPONSES[item_id]
    prompt = ITEMS[item_id]["prompt"]
    assert check_constraints(list(ref.instructions), list(ref.kwargs), prompt, good).status == "pass"
    assert check_constraints(list(ref.instructions), list(ref.kwargs), prompt, bad).failed


# ---------------------------------------------------------------- default.jsonl's references (`make data`)

DEFAULT = {row["id"]: row for row in map(json.loads, (ROOT / "configs/prompts/default.jsonl").open(encoding="utf-8"))}
DEFAULT_RIGHT = {
    "math-001": 24 * 0.75, "math-002": (22 - 7) / 3, "math-003": (36 / 6) * (36 / 3), "math-004": 342 / 18,
    "math-005": sum(range(1, 101)), "math-006": 150 / 2.5, "math-007": "2/3", "math-008": "2/5", "math-010": 8 / 2 * 3,
    "math-011": 0.15 * 240, "math-012": round(1000 * 1.05**2, 2), "math-013": 180 * 4 / 9, "math-015": 480 * 3 / 8,
    "math-mt-001": (8 - 3) / 2, "reasoning-004": 30 + 12, "reasoning-005": abs(15 * 6 - (3 * 30 + 15 * 0.5)),
    "reasoning-008": 5 * 4 // 2,
    "coding-001": "```python\ndef is_palindrome(s):\n    t = [c.lower() for c in s if c.isalnum()]\n"
    "    return t == t[::-1]\n```",
    "coding-002": "```sql\nSELECT customer_id, SUM(amount) AS total FROM orders GROUP BY customer_id\n"
    "ORDER BY total DESC LIMIT 5;\n```",
    "coding-006": "```python\ndef average(nums):\n    return sum(nums) / len(nums)\n```",
    "coding-008": "```sql\nSELECT department, COUNT(*) AS n FROM employees GROUP BY department ORDER BY n DESC;\n```",
    "coding-010": "```python\ndef word_count(text):\n    counts = {}\n    for w in text.lower().split():\n"
    "        counts[w] = counts.get(w, 0) + 1\n    return counts\n```",
    "coding-011": "```javascript\nfunction debounce(fn, ms) {\n  let timer;\n  return function (...args) {\n"
    "    clearTimeout(timer);\n    timer = setTimeout(() => fn.apply(this, args), ms);\n  };\n}\n```",
}  # fmt: skip
DEFAULT_WRONG = {  # the answers `make data` wrote before verification (issue 29), and the like
    "math-013": "The largest angle is 9°.",
    "coding-002": "```sql\nSELECT customer_id, created_at, SUM(amount) FROM orders GROUP BY customer_id "
    "ORDER BY 3 DESC LIMIT 5;\n```",
    "coding-008": "```sql\nSELECT department, COUNT(*) FROM employees GROUP BY department;\n```",
    "coding-011": "```javascript\nfunction callLater(fn, ms) {\n  setTimeout(fn, ms);\n}\n```",
}


@pytest.mark.parametrize("item_id", sorted(DEFAULT_RIGHT))
def test_the_default_sets_references_pass_a_right_answer(item_id):
    import shutil

    from moaa.verify.isolation import namespace_problem

    reference = Reference.from_dict(DEFAULT[item_id]["reference"])
    if reference.language == "javascript" and (shutil.which("node") is None or namespace_problem()):
        pytest.skip("needs node and namespaces")
    right = DEFAULT_RIGHT[item_id]
    text = (
        right
        if isinstance(right, str) and "```" in right
        else f"The answer is {right if isinstance(right, str) else f'{right:g}'}."
    )
    assert _status(reference, text) == "pass"
    if item_id in DEFAULT_WRONG:
        assert _status(reference, DEFAULT_WRONG[item_id]) == "fail"


def _status(reference: Reference, text: str) -> str:
    if reference.answer is not None:
        return check_answer(reference.answer, text).status
    if reference.tests:
        return check_tests(reference, text, SandboxConfig(cpu_s=5, wall_s=20)).status
    return check_sql(reference, text, 5).status
