package search

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/search/query"
	"golang.org/x/text/width"
)

// Query is one page of a search, in rooms the caller has already decided
// the user may read.
type Query struct {
	Term string
	// Keys are the content keys to search (all three when empty).
	Keys []string
	// Rooms maps each room to search to the highest stream position the
	// user may read in it.
	Rooms       map[string]int64
	Senders     []string // only these senders, when not nil
	NotSenders  []string
	Types       []string // only these types, when not nil
	NotTypes    []string
	ContainsURL *bool
	// Recent orders by stream position, newest first; otherwise by rank.
	Recent bool
	// UpTo, when set, keeps only events at or below it: a search by rank
	// pages through what its first page saw.
	UpTo int64
	// Below, when set, keeps only events with a lower position: the next
	// page of a search by recency.
	Below int64
	From  int // hits to skip: the next page of a search by rank
	Size  int
}

// Hit is one matching event.
type Hit struct {
	EventID string
	Score   float64
}

// Result is a page of hits and how many match in all.
type Result struct {
	Hits  []Hit
	Total uint64
}

// Highlights are the words a client should highlight for a search term:
// each word as typed and, when different, as the index compares it (lower
// case, full-width letters folded), so ＭＥＥＴＩＮＧ highlights meeting.
func Highlights(term string) []string {
	out := []string{}
	seen := map[string]bool{}
	for _, w := range strings.Fields(term) {
		for _, f := range []string{w, strings.ToLower(width.Fold.String(w))} {
			if !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	return out
}

// HasWords reports whether a search term has anything to search for.
func HasWords(term string) bool { return len(analyseTerm(term)) > 0 }

// Count is how many events match q in all.
func (x *Index) Count(ctx context.Context, q Query) (uint64, error) {
	q.From, q.Size = 0, 0
	res, err := x.query(ctx, q)
	return res.Total, err
}

// Search runs q. A term with no words matches nothing.
func (x *Index) Search(ctx context.Context, q Query) (Result, error) {
	if q.Size <= 0 {
		return Result{Hits: []Hit{}}, nil
	}
	return x.query(ctx, q)
}

func (x *Index) query(ctx context.Context, q Query) (Result, error) {
	words := analyseTerm(q.Term)
	if len(words) == 0 || len(q.Rooms) == 0 {
		return Result{Hits: []Hit{}}, nil
	}
	keys := q.Keys
	if len(keys) == 0 {
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	text := make([]query.Query, 0, len(words))
	for _, w := range words {
		per := make([]query.Query, 0, len(keys))
		for _, k := range keys {
			per = append(per, wordQuery(w, k))
		}
		text = append(text, bleve.NewDisjunctionQuery(per...))
	}
	must := []query.Query{bleve.NewConjunctionQuery(text...), roomsQuery(q.Rooms)}
	if q.UpTo > 0 {
		must = append(must, posRange(math.Inf(-1), float64(q.UpTo), true))
	}
	if q.Below > 0 {
		must = append(must, posRange(math.Inf(-1), float64(q.Below), false))
	}
	if q.Senders != nil {
		must = append(must, anyTerm(fieldSender, q.Senders))
	}
	if q.Types != nil {
		must = append(must, anyTerm(fieldType, q.Types))
	}
	if q.ContainsURL != nil {
		b := bleve.NewBoolFieldQuery(*q.ContainsURL)
		b.SetField(fieldURL)
		must = append(must, b)
	}
	bq := bleve.NewBooleanQuery()
	bq.AddMust(must...)
	if len(q.NotSenders) > 0 {
		bq.AddMustNot(anyTerm(fieldSender, q.NotSenders))
	}
	if len(q.NotTypes) > 0 {
		bq.AddMustNot(anyTerm(fieldType, q.NotTypes))
	}
	req := bleve.NewSearchRequestOptions(bq, q.Size, q.From, false)
	if q.Recent {
		req.SortBy([]string{"-" + fieldPos})
	} else {
		req.SortBy([]string{"-_score", "-" + fieldPos})
	}
	res, err := x.idx.SearchInContext(ctx, req)
	if err != nil {
		return Result{}, fmt.Errorf("search index: %w", err)
	}
	out := Result{Hits: make([]Hit, 0, len(res.Hits)), Total: res.Total}
	for _, h := range res.Hits {
		out.Hits = append(out.Hits, Hit{EventID: h.ID, Score: h.Score})
	}
	return out, nil
}

// wordQuery matches one word in one field: its tokens as a phrase, or a
// lone CJK character in the field's companion.
func wordQuery(w queryWord, key string) query.Query {
	if w.char != "" {
		t := bleve.NewTermQuery(w.char)
		t.SetField(key + charsSuffix)
		return t
	}
	if len(w.terms) == 1 {
		t := bleve.NewTermQuery(w.terms[0])
		t.SetField(key)
		return t
	}
	return bleve.NewPhraseQuery(w.terms, key)
}

// roomsQuery matches events of the rooms, each up to its position.
func roomsQuery(rooms map[string]int64) query.Query {
	ids := make([]string, 0, len(rooms))
	for id := range rooms {
		ids = append(ids, id)
	}
	sort.Strings(ids) // the same query for the same rooms, page after page
	var open []string
	var bounded []query.Query
	for _, id := range ids {
		if upTo := rooms[id]; upTo == math.MaxInt64 {
			open = append(open, id)
		} else {
			t := bleve.NewTermQuery(id)
			t.SetField(fieldRoom)
			bounded = append(bounded, bleve.NewConjunctionQuery(t, posRange(math.Inf(-1), float64(upTo), true)))
		}
	}
	if len(open) > 0 {
		bounded = append(bounded, anyTerm(fieldRoom, open))
	}
	return bleve.NewDisjunctionQuery(bounded...)
}

func anyTerm(field string, values []string) query.Query {
	qs := make([]query.Query, 0, len(values))
	for _, v := range values {
		t := bleve.NewTermQuery(v)
		t.SetField(field)
		qs = append(qs, t)
	}
	if len(qs) == 0 {
		return bleve.NewMatchNoneQuery()
	}
	return bleve.NewDisjunctionQuery(qs...)
}

func posRange(lo, hi float64, inclusive bool) query.Query {
	var minp *float64
	if !math.IsInf(lo, -1) {
		minp = &lo
	}
	r := bleve.NewNumericRangeInclusiveQuery(minp, &hi, nil, &inclusive)
	r.SetField(fieldPos)
	return r
}
