"""Scrive-like traffic: flow instances with their documents, and the end each must reach.

Everything is drawn from one seeded `random.Random`: a seed gives the same callbacks, byte
for byte. The expected end of each subject is the story it was given ("this flow was
cancelled, so it ends cancelled; its documents end canceled"), not the tracker's fold, so
a check against it can find bugs in the fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowtracker.scrive.paper import Paper
from flowtracker.scrive.payloads import (
    DAY,
    MIN,
    NS,
    PROVIDERS,
    STAGES,
    START,
    USERS,
    Draw,
    Event,
    compact,
)
from flowtracker.scrive.traffic import SimCallback, SimSubject

REASONS = ["Sorry, I don't want to sign this", "The rent is wrong on page 2.", "Fel personnummer"]
# How a story ends, and how often out of 40: mostly completed, as in real traffic.
SHARES = {"completed": 21, "max_failures": 2, "flow_rejected": 4, "cancelled": 3,
          "timed_out": 3, "failed": 2, "in_progress": 5}  # fmt: skip
ENDINGS = tuple(ending for ending, share in SHARES.items() for _ in range(share))
STATE_OF = {"flow_rejected": "rejected"}  # any other ending is also the state's name
JSON_TYPE = "application/json"


@dataclass
class Story:
    """One instance being told: its Flow events so far, and the twists it took."""

    iid: str
    users: list[str]
    papers: list[Paper]
    notes: list[str]
    events: list[Event] = field(default_factory=list)
    illegal: set[int] = field(default_factory=set)  # times of events a tracker must refuse

    def add(self, event: Event, *, illegal: bool = False) -> None:
        self.events.append(event)
        if illegal:
            self.illegal.add(event[0])


class Stories(Draw):
    """Flow instances with their documents, each given an ending drawn from `ENDINGS`."""

    def __init__(self, seed: int) -> None:
        super().__init__(f"scenario {seed}")
        self.document_ids: set[str] = set()

    def instance(self, ending: str) -> list[SimSubject]:
        """One instance and its documents, from creation to `ending`."""
        r, iid = self.rng, self.uuid()
        t = START + r.randrange(4 * 24 * 60) * MIN
        users = r.sample(USERS, r.randint(1, 3))
        papers = [self._paper(t, len(users)) for _ in range(r.choice((1, 1, 2, 3)))]
        story = Story(iid, users, papers, [ending])
        t = self.step(t, 1, 30)
        for paper in papers:
            if r.random() < 0.2:
                paper.send(t, "awaiting_start")
            paper.send(t, "pending")
        if r.random() < 0.6:
            t = self.step(t, 0, 2)
            story.add(self.flow_event(t, iid, "custom", callback_name=STAGES[0]))
        signers = len(users) if ending == "completed" else r.randrange(len(users))
        if ending == "max_failures":
            t = self._locked_out(story, t)
            ending, signers = r.choice(("failed", "timed_out", "in_progress")), 0
            story.notes.append(ending)
        for i, user in enumerate(users[:signers]):
            t = self.step(self._authenticate(story, t, user), 1, 20)
            for paper in papers:
                paper.sign(t, i, last=i == len(users) - 1)
            if r.random() < 0.5:
                t = self.step(t, 1, 30)
                stage = r.choice(STAGES[1:])
                story.add(self.flow_event(t, iid, "custom", callback_name=stage))
        self._end(story, ending, t, signers)
        if not story.events:  # someone opened the flow: an instance is known by its callbacks
            self._authenticate(story, t, users[0])
        state = STATE_OF.get(ending, ending)
        flow = SimSubject("flow", iid, state, self._flow(story), tuple(story.notes))
        return [flow, *(p.subject(self._merged(len(p.snapshots))) for p in papers)]

    def _end(self, story: Story, ending: str, t: int, signers: int) -> None:
        r, iid, papers = self.rng, story.iid, story.papers
        if ending == "completed":
            self._complete(story, t)
        elif ending == "flow_rejected":
            self._reject(story, t, signers)
        elif ending == "cancelled":
            t = self.step(t, 30, 3000)
            for paper in papers:
                paper.send(t, "canceled")
            story.add(self.flow_event(self.step(t, 0, 0.1), iid, "cancelled"))
        elif ending == "timed_out":
            for paper in papers:
                paper.send(paper.deadline + r.randrange(5, 300) * NS, "timedout")
            deadline = max(paper.deadline for paper in papers)
            story.add(self.flow_event(self.step(deadline, 5, 60), iid, "timed_out"))
        elif ending == "failed":
            story.add(self.flow_event(self.step(t, 10, 600), iid, "failed"))
        elif ending == "in_progress" and r.random() < 0.3:  # a document timed out; prolonged
            paper = papers[0]
            t = paper.send(paper.deadline + r.randrange(5, 300) * NS, "timedout")
            paper.send(self.step(t, 60, 2000), "pending", bump=False)
            story.notes.append("prolonged")

    def _complete(self, story: Story, t: int) -> None:
        r, iid = self.rng, story.iid
        for paper in story.papers:  # the last signature closed each; sealing follows
            t = self.step(t, 0.5, 5)
            if r.random() < 0.15:
                paper.send(t, "document_error", bump=False)
                t = self.step(t, 10, 120)
                story.notes.append("seal error")
            paper.send(t, "closed", bump=False, sealed=True)
        t = self.step(t, 1, 10)
        for _ in story.papers:  # Scrive sends one `completed` per document
            story.add(self.flow_event(t, iid, "completed"))
            t = self.step(t, 0, 0.05)
        if r.random() < 0.08:  # the author's cancel raced the completion: illegal
            story.add(self.flow_event(self.step(t, 1, 3), iid, "cancelled"), illegal=True)
            story.notes.append("race")
        if r.random() < 0.25:  # a participant opens the archived documents later
            t = self.step(t, 60, 2000)
            story.add(self.auth(t, iid, r.choice(story.users), "se_bank_id", True))
            story.notes.append("archived view")
        if r.random() < 0.2:
            paper = r.choice(story.papers)
            paper.send(paper.mtime + r.randrange(15, 31) * DAY, "closed", bump=False, sealed=True)
            story.notes.append("seal extended")

    def _reject(self, story: Story, t: int, party: int) -> None:
        r, papers, user = self.rng, story.papers, story.users[party]
        t = self.step(self._authenticate(story, t, user), 1, 30)
        reason = r.choice(REASONS)
        single = len(papers) > 1 or r.random() < 0.5  # one document, not the whole flow
        target = r.choice(papers)
        for paper in papers:
            if paper is target or not single:
                paper.reject(t, party, reason)
            else:  # rejecting one document cancels the others
                paper.send(t, "canceled")
        extra: dict[str, Any] = {"user_name": user}
        if r.random() < 0.7:
            extra["message"] = reason
        if single:
            extra["document_name"] = target.json["title"]
        story.add(self.flow_event(self.step(t, 0, 0.1), story.iid, "flow_rejected", **extra))

    def _authenticate(self, story: Story, t: int, user: str) -> int:
        r = self.rng
        t = self.step(t, 5, 240)
        provider = r.choice(PROVIDERS)
        for _ in range(r.choice([0, 0, 0, 1, 2])):
            story.add(self.auth(t, story.iid, user, provider, False))
            t = self.step(t, 0.5, 10)
        story.add(self.auth(t, story.iid, user, provider, True))
        return t

    def _locked_out(self, story: Story, t: int) -> int:
        user, provider = story.users[0], self.rng.choice(PROVIDERS)
        for _ in range(3):
            t = self.step(t, 0.5, 5)
            story.add(self.auth(t, story.iid, user, provider, False))
        t = self.step(t, 0, 0.1)
        exceeded = {"user_name": user, "provider": provider}
        story.add(self.flow_event(t, story.iid, "authentication_max_failures_exceeded", **exceeded))
        return t

    def _paper(self, t: int, people: int) -> Paper:
        did = ""
        while not did or did in self.document_ids:
            # Scrive's ids are 19 digits below 2**63: draw from all of them, so that runs
            # with different seeds against one tracker do not share documents.
            did = str(self.rng.randrange(10**18, 2**63))
        self.document_ids.add(did)
        return Paper(self, did, t, people)

    def _merged(self, count: int) -> list[bool]:
        """Which snapshots are sent: a queued one is replaced by a newer one, now and then."""
        return [self.rng.random() >= 0.1 for _ in range(count - 1)] + [True]

    def _flow(self, story: Story) -> tuple[SimCallback, ...]:
        callbacks = []
        for t, body in sorted(story.events, key=lambda event: event[0]):
            if self.rng.random() < 0.2:  # Scrive's own samples also have ten digits
                body["event_created"] = f"{body['event_created'][:-1]}{self.rng.randrange(10)}Z"
            outcome = "illegal" if t in story.illegal else "applied"
            text, data = body["event_created"], compact(body).encode()
            callbacks.append(
                SimCallback("flow", story.iid, body["type"], text, (t, 0), data, JSON_TYPE, outcome)
            )
        return tuple(callbacks)


def scenario(seed: int, instances: int) -> list[SimSubject]:
    """`instances` flow instances, each followed by its documents; the same for a seed."""
    stories = Stories(seed)
    endings = [ENDINGS[i % len(ENDINGS)] for i in range(instances)]
    stories.rng.shuffle(endings)
    return [subject for ending in endings for subject in stories.instance(ending)]
