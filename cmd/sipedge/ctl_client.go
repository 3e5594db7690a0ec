package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// authMode says which credentials a ctl command sends.
type authMode uint8

const (
	authModeNone       authMode = iota // no request (completion)
	authModeAccount                    // basic auth SIPEDGE_AUTH_ID:SIPEDGE_AUTH_TOKEN
	authModeAdmin                      // Bearer SIPEDGE_ADMIN_TOKEN
	authModeAnyAccount                 // the account's basic auth, else the admin token
)

// apiClient talks to the control API. It is used by one command, sequentially.
type apiClient struct {
	base       *url.URL // scheme://host[:port][/prefix], no trailing slash
	authID     string
	authToken  string
	adminToken string
	timeout    time.Duration
	hc         http.Client
}

// apiResponse is one answer of the API: status, headers and the body as sent.
type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

// apiError is an answer outside 2xx. Its message is the API's `error` text, which names
// the field and the value the API refused.
type apiError struct {
	status int
	method string
	path   string
	msg    string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.msg, e.status, http.StatusText(e.status))
}

// maxAnswer bounds what ctl reads of one answer (a list page is a few tens of KiB).
const maxAnswer = 16 << 20

// accountPath is the escaped Zentrunk path of the account's objects: each of rel (a
// collection name or an id) escaped and joined under /v1/Account/{auth_id}/Zentrunk/.
func (c *apiClient) accountPath(rel ...string) string {
	p := "/v1/Account/" + url.PathEscape(c.authID) + "/Zentrunk/"
	for _, r := range rel {
		p += url.PathEscape(r) + "/" // ids as typed; fixed names are unchanged
	}
	return p
}

// do sends one request to path (already escaped: callers escape ids with
// url.PathEscape, so an IPv6 /64 keeps its slash as %2F). body, when not nil, is sent as JSON. Answers outside 2xx are
// *apiError; a transport failure says which URL could not be reached.
func (c *apiClient) do(ctx context.Context, auth authMode, method, path string, query url.Values, body any) (*apiResponse, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	target := strings.TrimRight(c.base.String(), "/") + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sipedge-ctl/"+version)
	switch {
	case auth == authModeAdmin, auth == authModeAnyAccount && (c.authID == "" || c.authToken == ""):
		req.Header.Set("Authorization", "Bearer "+c.adminToken)
	case auth != authModeNone:
		req.SetBasicAuth(c.authID, c.authToken)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach the control API at %s: %v", c.base, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %v", method, path, err)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return nil, &apiError{status: res.StatusCode, method: method, path: path, msg: errorText(res.StatusCode, b)}
	}
	return &apiResponse{status: res.StatusCode, header: res.Header, body: b}, nil
}

// errorText is the API's `error` message of a failed answer, or a short form of the body
// when it is not the API's JSON (a proxy's HTML page, say).
func errorText(status int, b []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return strings.ToLower(http.StatusText(status))
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// listMeta is the paging block of every list answer.
type listMeta struct {
	Limit      int     `json:"limit"`
	Offset     int     `json:"offset"`
	TotalCount int     `json:"total_count"`
	Previous   *string `json:"previous"`
	Next       *string `json:"next"`
}

// listPage is one list answer, objects kept as the API sent them.
type listPage struct {
	APIID   string            `json:"api_id"`
	Meta    listMeta          `json:"meta"`
	Objects []json.RawMessage `json:"objects"`
}

// pageLimit is the largest page the API serves.
const pageLimit = 20

// listAll pages through a list (limit 20, offset 0, 20, … until meta.next is null) and
// returns every object, plus the answer to print as JSON: the one page unchanged when
// one request held everything, else one answer of the same shape holding every object
// (meta then describes that one page: limit = offset + count, offset 0, no next).
func (c *apiClient) listAll(ctx context.Context, auth authMode, path string) ([]json.RawMessage, []byte, error) {
	var all []json.RawMessage
	var first listPage
	var firstBody []byte
	for offset, pages := 0, 0; ; pages++ {
		q := url.Values{"limit": {strconv.Itoa(pageLimit)}, "offset": {strconv.Itoa(offset)}}
		res, err := c.do(ctx, auth, http.MethodGet, path, q, nil)
		if err != nil {
			return nil, nil, err
		}
		var p listPage
		if err := json.Unmarshal(res.body, &p); err != nil {
			return nil, nil, fmt.Errorf("GET %s: not a list answer: %v", path, err)
		}
		if pages == 0 {
			first, firstBody = p, res.body
		}
		all = append(all, p.Objects...)
		if p.Meta.Next == nil || len(p.Objects) == 0 || pages > 100000 {
			break
		}
		offset += len(p.Objects)
	}
	if first.Meta.Next == nil {
		return all, firstBody, nil
	}
	if all == nil {
		all = []json.RawMessage{}
	}
	merged := listPage{APIID: first.APIID, Meta: listMeta{Limit: len(all), TotalCount: len(all)}, Objects: all}
	b, err := json.Marshal(merged)
	if err != nil {
		return nil, nil, err
	}
	return all, append(b, '\n'), nil
}
