"""How an answer came about: the one vocabulary the X-Mirror-Cache header, the logs and the stats share."""
import pytest

from registry_mirror.outcomes import Outcome


def test_the_values_are_the_words_clients_see_in_the_cache_header():
    assert [str(outcome) for outcome in Outcome] == [
        "HIT", "MISS", "COALESCED", "PEER", "STALE", "ERROR", "LOCAL", "REFUSED"]
    assert f"{Outcome.COALESCED}" == "COALESCED"  # formatted into headers and log lines as the bare word


@pytest.mark.parametrize("outcome", list(Outcome))
def test_a_header_value_reads_back_as_its_outcome(outcome):
    assert Outcome(str(outcome)) is outcome
    assert outcome == outcome.name  # a StrEnum: compares equal to the plain text


def test_stats_keys_are_the_lower_cased_values():
    assert {outcome.lower() for outcome in Outcome} == {
        "hit", "miss", "coalesced", "peer", "stale", "error", "local", "refused"}


def test_only_hits_and_stale_answers_count_as_answered_without_the_upstream():
    assert {outcome for outcome in Outcome if outcome.cached} == {Outcome.HIT, Outcome.STALE}


def test_an_unknown_word_is_no_outcome():
    with pytest.raises(ValueError):
        Outcome("hit")  # the values are upper-case; the stats' lower-case keys are not outcomes
